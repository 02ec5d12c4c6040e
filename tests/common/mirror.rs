//! A real HTTP/1.1 server on 127.0.0.1 for the download tests: serves one file under any
//! path ending in its name, honours `Range: bytes=N-` (or not), and can fail on purpose.

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// How the server answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// The file, with ranges.
    Serve,
    /// The file, ignoring ranges (always 200 and the whole file).
    IgnoreRange,
    /// Announces the whole length, sends this many bytes, then closes the connection.
    CutAfter(usize),
    /// 404 for everything.
    NotFound,
    /// Answers plain HTTP as soon as a client connects, before reading anything (what a TLS
    /// client meets on a plain-HTTP port).
    PlainHttpAtOnce,
}

/// What the server saw of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub path: String,
    pub range_from: Option<usize>,
}

/// A running server; stopped on drop.
pub struct Mirror {
    pub port: u16,
    pub file_name: String,
    body: Arc<Mutex<Vec<u8>>>,
    behaviour: Arc<Mutex<Behaviour>>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Mirror {
    /// Serves `body` as `file_name`.
    pub fn start(file_name: &str, body: Vec<u8>) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let body = Arc::new(Mutex::new(body));
        let behaviour = Arc::new(Mutex::new(Behaviour::Serve));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, h, s, st) = (body.clone(), behaviour.clone(), seen.clone(), stop.clone());
        let name = file_name.to_owned();
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    let _ = answer(&name, stream, &b, &h, &s);
                }
            }
        });
        Ok(Self {
            port,
            file_name: file_name.to_owned(),
            body,
            behaviour,
            seen,
            stop,
            thread: Some(thread),
        })
    }

    /// The base URL to give `DINO_CURATE_DOWNLOAD_BASE`.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}/dino/", self.port)
    }

    pub fn set(&self, behaviour: Behaviour) {
        if let Ok(mut b) = self.behaviour.lock() {
            *b = behaviour;
        }
    }

    pub fn set_body(&self, body: Vec<u8>) {
        if let Ok(mut b) = self.body.lock() {
            *b = body;
        }
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag and the port closes.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn answer(
    file_name: &str,
    stream: TcpStream,
    body: &Mutex<Vec<u8>>,
    behaviour: &Mutex<Behaviour>,
    seen: &Mutex<Vec<Seen>>,
) -> std::io::Result<()> {
    if behaviour
        .lock()
        .is_ok_and(|b| *b == Behaviour::PlainHttpAtOnce)
    {
        let mut stream = stream;
        write!(
            stream,
            "HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n"
        )?;
        stream.flush()?;
        return Ok(());
    }
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_owned();
    let mut range_from = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("range: bytes=") {
            range_from = v.trim().trim_end_matches('-').parse().ok();
        }
    }
    if let Ok(mut s) = seen.lock() {
        s.push(Seen {
            path: path.clone(),
            range_from,
        });
    }
    let mut behaviour = behaviour
        .lock()
        .map(|b| b.clone())
        .unwrap_or(Behaviour::NotFound);
    if !path.ends_with(&format!("/{file_name}")) {
        behaviour = Behaviour::NotFound;
    }
    let body = body.lock().map(|b| b.clone()).unwrap_or_default();
    let mut stream = stream;
    match behaviour {
        Behaviour::NotFound | Behaviour::PlainHttpAtOnce => write!(
            stream,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?,
        Behaviour::Serve if range_from.is_some_and(|f| f >= body.len()) => write!(
            stream,
            "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?,
        Behaviour::Serve if range_from.is_some() => {
            let from = range_from.unwrap_or(0);
            write!(
                stream,
                "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {from}-{}/{}\r\nConnection: close\r\n\r\n",
                body.len() - from,
                body.len() - 1,
                body.len()
            )?;
            stream.write_all(&body[from..])?;
        }
        Behaviour::Serve | Behaviour::IgnoreRange => {
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            stream.write_all(&body)?;
        }
        Behaviour::CutAfter(n) => {
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            stream.write_all(&body[..n.min(body.len())])?;
        }
    }
    stream.flush()?;
    stream.shutdown(Shutdown::Both)
}
