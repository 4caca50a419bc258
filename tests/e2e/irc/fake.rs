//! A scripted IRC server for what ngircd cannot do: SASL (ngircd has no
//! SASL and no services), services accounts on messages (`account-tag`),
//! and an "Excess Flood" kill. The test plays the server line by line.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// A listening fake server.
pub struct Fake {
    listener: TcpListener,
    /// Its port.
    pub port: u16,
}

impl Fake {
    /// Listens on a free loopback port.
    pub fn start() -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").expect("cannot listen");
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        Fake { listener, port }
    }

    /// Waits (bounded) for the bot to connect.
    pub fn accept(&self, timeout: Duration) -> Conn {
        let deadline = Instant::now() + timeout;
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(false).unwrap();
                    return Conn::new(stream);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(
                        Instant::now() < deadline,
                        "the bot did not connect within {timeout:?}"
                    );
                    thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
    }
}

/// One connection of the bot to the fake server.
pub struct Conn {
    stream: TcpStream,
    lines: mpsc::Receiver<String>,
    /// Every line the bot sent so far.
    pub seen: Vec<String>,
}

impl Conn {
    fn new(stream: TcpStream) -> Conn {
        let reader = BufReader::new(stream.try_clone().unwrap());
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in reader.lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Conn {
            stream,
            lines,
            seen: Vec::new(),
        }
    }

    /// Sends one line to the bot.
    pub fn send(&mut self, line: &str) {
        write!(self.stream, "{line}\r\n").expect("fake server cannot write");
    }

    /// The next line from the bot (bounded).
    pub fn next(&mut self, timeout: Duration) -> String {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => {
                self.seen.push(line.clone());
                line
            }
            Err(_) => panic!(
                "the bot sent nothing more within {timeout:?}; it sent:\n{}",
                self.seen.join("\n")
            ),
        }
    }

    /// Reads lines until one starts with `prefix`; returns it.
    pub fn until(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let line = self.next(deadline.saturating_duration_since(Instant::now()));
            if line.starts_with(prefix) {
                return line;
            }
        }
    }

    /// Lines the bot sends within `window`.
    pub fn lines_for(&mut self, window: Duration) -> Vec<String> {
        let deadline = Instant::now() + window;
        let mut got = Vec::new();
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(line.clone());
            got.push(line);
        }
        got
    }

    /// Closes the connection.
    pub fn close(self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}
