//! The `--metrics` HTTP endpoint, served from a reactor's own loop: accept, read one bounded
//! request head, answer `GET /metrics` with Prometheus text (anything else 404 or 400), close.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use slab::Slab;

use crate::metrics::METRICS_CONNECTIONS_MAX;
use crate::metrics::{parse_request, render, response, HttpRequest, ReactorMetrics, HTTP_REQUEST_BYTES_MAX};
use crate::reactor::bind_error;

/// Names the metrics listener in its bind errors.
const METRICS_LISTENER_NAME: &str = "metrics listener (--metrics)";
/// Token of the metrics listener.
pub const METRICS_LISTENER: Token = Token(usize::MAX - 4);
/// Metrics connections take tokens from here up (far above any client connection's key).
const METRICS_TOKEN_BASE: usize = usize::MAX - 4096;
/// How long a scraper has to send its request and read the answer.
const METRICS_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

struct Scrape {
    stream: TcpStream,
    request: Vec<u8>,
    answer: Vec<u8>,
    written: usize,
    deadline: Instant,
}

/// The endpoint: its listener, its open scrapes and every reactor's metrics.
pub struct MetricsEndpoint {
    listener: TcpListener,
    scrapes: Slab<Scrape>,
    reactors: Vec<Arc<ReactorMetrics>>,
}

impl MetricsEndpoint {
    /// Binds `addr` and registers the listener.
    pub fn bind(addr: SocketAddr, registry: &Registry, reactors: Vec<Arc<ReactorMetrics>>) -> io::Result<Self> {
        let mut listener = TcpListener::bind(addr).map_err(|e| bind_error(METRICS_LISTENER_NAME, addr, e))?;
        registry.register(&mut listener, METRICS_LISTENER, Interest::READABLE)?;
        Ok(Self { listener, scrapes: Slab::new(), reactors })
    }

    /// The address scrapers connect to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Whether `token` belongs to this endpoint.
    pub fn owns(token: Token) -> bool {
        token == METRICS_LISTENER || token.0 >= METRICS_TOKEN_BASE && token.0 < METRICS_TOKEN_BASE + 1024
    }

    /// Handles readiness of one of this endpoint's tokens.
    pub fn handle(&mut self, registry: &Registry, token: Token, now: Instant) {
        if token == METRICS_LISTENER {
            return self.accept(registry, now);
        }
        let key = token.0 - METRICS_TOKEN_BASE;
        if self.scrapes.contains(key) && self.progress(registry, key, now) {
            self.drop_scrape(registry, key);
        }
    }

    /// Drops scrapes that ran out of time.
    pub fn tick(&mut self, registry: &Registry, now: Instant) {
        let late: Vec<usize> = self.scrapes.iter().filter(|(_, s)| now >= s.deadline).map(|(k, _)| k).collect();
        for key in late {
            self.drop_scrape(registry, key);
        }
    }

    fn accept(&mut self, registry: &Registry, now: Instant) {
        loop {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    log::warn!("metrics accept: {e}");
                    return;
                }
            };
            if self.scrapes.len() >= METRICS_CONNECTIONS_MAX {
                log::warn!("refusing a metrics connection: {METRICS_CONNECTIONS_MAX} already open");
                continue;
            }
            let deadline = now + METRICS_REQUEST_TIMEOUT;
            let key =
                self.scrapes.insert(Scrape { stream, request: Vec::new(), answer: Vec::new(), written: 0, deadline });
            let token = Token(METRICS_TOKEN_BASE + key);
            if registry.register(&mut self.scrapes[key].stream, token, Interest::READABLE).is_err() {
                self.scrapes.remove(key);
            }
        }
    }

    /// Reads the request or writes the answer (ages as of `now`); true when the scrape is done.
    fn progress(&mut self, registry: &Registry, key: usize, now: Instant) -> bool {
        let scrape = &mut self.scrapes[key];
        if scrape.answer.is_empty() {
            let mut chunk = [0u8; 1024];
            loop {
                match scrape.stream.read(&mut chunk) {
                    Ok(0) => return true,
                    Ok(n) => {
                        let room = HTTP_REQUEST_BYTES_MAX + 1 - scrape.request.len().min(HTTP_REQUEST_BYTES_MAX + 1);
                        scrape.request.extend_from_slice(&chunk[..n.min(room)]);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return true,
                }
            }
            scrape.answer = match parse_request(&scrape.request) {
                HttpRequest::Incomplete => return false,
                HttpRequest::Get(path) if path == "/metrics" => {
                    let snapshots: Vec<_> = self.reactors.iter().map(|r| r.read()).collect();
                    response("200 OK", "text/plain; version=0.0.4", &render(&snapshots, now))
                }
                HttpRequest::Get(_) => response("404 Not Found", "text/plain", "try /metrics\n"),
                HttpRequest::Bad => response("400 Bad Request", "text/plain", "bad request\n"),
            };
        }
        let scrape = &mut self.scrapes[key];
        while scrape.written < scrape.answer.len() {
            match scrape.stream.write(&scrape.answer[scrape.written..]) {
                Ok(0) => return true,
                Ok(n) => scrape.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let token = Token(METRICS_TOKEN_BASE + key);
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    return registry.reregister(&mut scrape.stream, token, interest).is_err();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return true,
            }
        }
        let _ = scrape.stream.shutdown(Shutdown::Write);
        true
    }

    fn drop_scrape(&mut self, registry: &Registry, key: usize) {
        if let Some(mut scrape) = self.scrapes.try_remove(key) {
            let _ = registry.deregister(&mut scrape.stream);
        }
    }
}
