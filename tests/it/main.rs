mod config_files;
mod scripts;
