//! Known-answer test vectors of protocol 2 (docs/PROTOCOL.md, "Test
//! vectors"): fixed keys and ephemeral keys in, every byte of the
//! handshake and of the first frame each way out. The test below checks
//! the document against the code, so neither can drift from the other,
//! and a second implementation can check itself against the document.

#[cfg(test)]
mod tests {
    use crate::protocol::auth::{
        client_finish, client_start, server_accept, Credentials, Key, Purpose,
    };
    use crate::protocol::message::Message;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn counting(from: u8) -> [u8; 32] {
        std::array::from_fn(|i| from + i as u8)
    }

    /// Every vector, computed by this implementation, in document order.
    fn computed() -> Vec<(&'static str, String)> {
        let fleet = Key::from_bytes(counting(0x00));
        let host_key = fleet.for_host("pi1");
        let (ce, se) = (counting(0x20), counting(0x40));
        let (first, hs) = client_start(Purpose::Control, "pi1", &host_key, Some(&ce)).unwrap();
        let credentials = Credentials::Fleet {
            keys: vec![fleet.clone()],
            revoked: Vec::new(),
        };
        let (host, answer, mut server) =
            server_accept(&first, Purpose::Control, &credentials, Some(&se)).unwrap();
        assert_eq!(host, "pi1");
        let mut client = client_finish(hs, &answer).unwrap();
        let seal = |t: &mut snow::TransportState, m: &Message| {
            let mut plain = m.encode();
            plain.push(0);
            let mut out = vec![0u8; plain.len() + 16];
            let n = t.write_message(&plain, &mut out).unwrap();
            out.truncate(n);
            out
        };
        let c2s = seal(&mut client, &Message::Ping);
        let s2c = seal(&mut server, &Message::Bye);
        // Each side opens the other's frame.
        let mut buf = [0u8; 64];
        assert_eq!(server.read_message(&c2s, &mut buf).unwrap(), 2);
        assert_eq!(&buf[..2], &[1, 0]);
        assert_eq!(client.read_message(&s2c, &mut buf).unwrap(), 2);
        assert_eq!(&buf[..2], &[7, 0]);
        vec![
            ("fleet_key", hex(fleet.as_bytes())),
            ("host", "pi1".into()),
            ("host_key", hex(host_key.as_bytes())),
            ("client_ephemeral", hex(&ce)),
            ("server_ephemeral", hex(&se)),
            ("client_first", hex(&first)),
            ("server_answer", hex(&answer)),
            ("client_ping", hex(&c2s)),
            ("server_bye", hex(&s2c)),
        ]
    }

    /// The `name value` lines of the document's vector block.
    fn documented() -> Vec<(String, String)> {
        let doc = include_str!("../../docs/PROTOCOL.md");
        let start = doc
            .find("```vectors")
            .expect("docs/PROTOCOL.md has a ```vectors block");
        let block = &doc[start + "```vectors".len()..];
        let block = &block[..block.find("```").expect("the block ends")];
        block
            .lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                Some((words.next()?.to_string(), words.next()?.to_string()))
            })
            .collect()
    }

    #[test]
    fn the_documented_vectors_are_what_the_code_computes() {
        let computed = computed();
        if std::env::var_os("PIHEALTH_PRINT_VECTORS").is_some() {
            for (name, value) in &computed {
                println!("{name:<17}{value}");
            }
        }
        let documented = documented();
        let computed: Vec<(String, String)> = computed
            .into_iter()
            .map(|(n, v)| (n.to_string(), v))
            .collect();
        assert_eq!(documented, computed);
    }
}
