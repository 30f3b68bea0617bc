//! `fanout chat`: a terminal chat client that people keep open.
//!
//! With a server running, in two terminals:
//!
//! ```text
//! fanout chat --name alice                 fanout chat --name bob
//! hi bob                                   (shows) alice: hi bob
//! ```
//!
//! Several addresses (`fanout chat HOST1:7400 HOST2:7400`) are tried in turn, and `--token`
//! (or `$FANOUT_TOKEN`) is presented to servers started with `--token-file`. `--tls` (with
//! `--tls-ca FILE` for a private CA) connects to a server's `--tls-listen` port. `/help` lists the
//! commands; `//text` sends `/text`. With stdin not a terminal, each line is sent as typed (so
//! `echo hi | fanout chat --send-only` works in scripts).
//!
//! # Two threads
//!
//! The main thread reads lines — through `rustyline` when stdin and stdout are a terminal, so that
//! incoming messages are printed above the prompt and the line being typed is redrawn — and
//! hands them to the network thread as [`Request`]s over a bounded channel. The network thread
//! owns the [`FailoverClient`]: it carries out the requests in order and prints what arrives,
//! reading with a short timeout so that a typed line waits at most [`POLL_INTERVAL`].
//!
//! # When the server goes away
//!
//! The client fails over to the next address (or to the same one once it is back), re-joins the
//! room and says `* reconnected to ADDR (messages may have been missed)`. When a round of attempts
//! gives up, chat says `* connection lost; retrying …` and starts another round after a pause,
//! until it is interrupted (with `--send-only` it exits with an error instead, so that a script
//! does not hang).
//!
//! A line typed while disconnected waits (in the channel) and is sent once connected again. A line
//! already written to a connection that then died before the server confirmed it (each batch of
//! lines is confirmed with a `PING`) may or may not have reached the room: chat says
//! `* may not have been delivered: TEXT` and does not send it again, since that could duplicate it.

use std::collections::HashMap;
use std::io::{self, BufRead, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use fanout::client::{ClientError, ClientOptions, Event};
use fanout::codec::{ClientFrame, Members, PresenceEvent, PresenceKind, RoomList};
use fanout::config::DEFAULT_LISTEN;
use fanout::error::ErrorCode;
use fanout::failover::{FailoverClient, FailoverError, FailoverEvent, ReconnectPolicy, Reconnected};
use fanout::limits::{self, PAYLOAD_BYTES_MAX, TOKEN_BYTES_MAX};
use fanout::names::{valid_room_name, valid_user_name};
use fanout::tls::ClientTls;

/// How long the network thread blocks reading before it looks at the typed lines again.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Bound on one connection attempt: TCP connect, `HELLO`/`WELCOME` and re-joining the room.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Bound on waiting for `JOINED`, `LEFT` or `PONG` from a live server.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Typed lines waiting for the network thread; when full, reading stdin waits (back-pressure
/// for pipes; a person does not type this many lines during an outage).
const REQUESTS_QUEUED_MAX: usize = 64;

/// Requests carried out before the lines among them are confirmed and incoming ones read.
const REQUESTS_PER_TURN: usize = 64;

/// Events printed before the network thread looks at the typed lines again.
const EVENTS_PER_TURN: usize = 256;

/// Pause after the first round of reconnection attempts that gave up; it doubles up to the max.
const ROUND_PAUSE_MIN: Duration = Duration::from_millis(500);

/// Longest pause between two rounds of reconnection attempts.
const ROUND_PAUSE_MAX: Duration = Duration::from_secs(5);

/// How long `/quit` waits for the server to confirm the lines already sent.
const QUIT_CONFIRM_TIMEOUT: Duration = Duration::from_secs(3);

/// Characters of a line shown when chat reports it may not have been delivered.
const SHOWN_LINE_CHARS_MAX: usize = 200;

/// The flags of `fanout chat`.
#[derive(Debug, Args)]
pub struct ChatArgs {
    /// Server addresses, tried in order; when one fails, the next.
    #[arg(default_value = DEFAULT_LISTEN)]
    addrs: Vec<String>,
    /// Your name (1-32 of A-Z a-z 0-9 _ - .).
    #[arg(long, default_value = "anon")]
    name: String,
    /// Room to chat in.
    #[arg(long, default_value = limits::DEFAULT_ROOM)]
    room: String,
    /// Token for a server started with --token-file.
    #[arg(long, env = "FANOUT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Only send: receive nothing, and at the end of input exit once the server has handled
    /// every line (for scripts: `echo hi | fanout chat --send-only`).
    #[arg(long)]
    send_only: bool,
    /// Connect over TLS (to a server's --tls-listen address), verifying its certificate against
    /// the system's CAs, or --tls-ca's.
    #[arg(long)]
    tls: bool,
    /// Trust the CAs in this PEM file instead of the system's (implies --tls).
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// Present this certificate chain, PEM, to a server that requires client certificates
    /// (with --tls-key; implies --tls).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert, PEM.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The name the server's certificate must hold (default: the addresses' host).
    #[arg(long, value_name = "NAME")]
    tls_server_name: Option<String>,
}

/// Runs `fanout chat`.
pub fn run(args: &ChatArgs) -> ExitCode {
    let settings = match Settings::new(args) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("fanout chat: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The first round runs before the prompt, so that a refused name or token ends chat at once.
    let first = match connect(&settings, &settings.addrs, &settings.name, Some(&settings.room)) {
        Ok(client) => {
            Output::Plain.status(connected_line(&client, &settings));
            Some(client)
        }
        Err(e) => match refusal(&e) {
            Some(reason) => {
                eprintln!("fanout chat: {reason}");
                return ExitCode::FAILURE;
            }
            None if settings.send_only => {
                eprintln!("fanout chat: gave up: cannot reach {} ({})", settings.addrs_text(), last_error(&e));
                return ExitCode::FAILURE;
            }
            None => {
                eprintln!("fanout chat: cannot connect to {} ({}); retrying", settings.addrs_text(), last_error(&e));
                None
            }
        },
    };
    let terminal = if settings.send_only { None } else { Terminal::open() };
    let out = terminal.as_ref().map_or(Output::Plain, Terminal::output);
    let (requests, queue) = mpsc::sync_channel(REQUESTS_QUEUED_MAX);
    let link = Link { requests, connected: Arc::new(AtomicBool::new(first.is_some())) };
    let send_only = settings.send_only;
    let network = thread::Builder::new().name("fanout-chat-net".into()).spawn({
        let (out, connected) = (out.clone(), Arc::clone(&link.connected));
        move || Driver::start(settings, first, out, queue, connected).run()
    });
    let network = match network {
        Ok(handle) => handle,
        Err(e) => {
            eprintln!("fanout chat: cannot start the network thread: {e}");
            return ExitCode::FAILURE;
        }
    };
    let end = match terminal {
        Some(terminal) => terminal.read_lines(&link, &out),
        None => read_piped_lines(&link, &out),
    };
    match end {
        InputEnd::Quit => confirm_then_exit(&link.requests, Some(QUIT_CONFIRM_TIMEOUT), true),
        InputEnd::Eof if send_only => confirm_then_exit(&link.requests, None, false),
        InputEnd::Eof => {
            // Keep printing what arrives until interrupted: the network thread never returns.
            drop(link);
            let _ = network.join();
            ExitCode::SUCCESS
        }
        InputEnd::Failed => ExitCode::FAILURE,
    }
}

/// What chat was started with, checked.
#[derive(Debug, Clone)]
struct Settings {
    addrs: Vec<SocketAddr>,
    name: String,
    room: String,
    options: ClientOptions,
    send_only: bool,
}

impl Settings {
    fn new(args: &ChatArgs) -> Result<Self, String> {
        if let Err(e) = check_name(&args.name) {
            return Err(format!("--name: {e}"));
        }
        if !valid_room_name(args.room.as_bytes()) {
            return Err(format!("--room {:?}: a room is 1-64 bytes of printable ASCII without space", args.room));
        }
        let token = args.token.clone().unwrap_or_default().into_bytes();
        if token.len() > TOKEN_BYTES_MAX {
            return Err(format!("--token is {} bytes; at most {TOKEN_BYTES_MAX}", token.len()));
        }
        let mut addrs = Vec::new();
        for text in &args.addrs {
            for addr in text.to_socket_addrs().map_err(|e| format!("cannot resolve {text}: {e}"))? {
                if !addrs.contains(&addr) {
                    addrs.push(addr);
                }
            }
        }
        if addrs.is_empty() {
            return Err("no server address".into());
        }
        let tls = ClientTls::from_flags_if_asked(
            args.tls,
            args.tls_ca.as_deref(),
            args.tls_cert.as_deref(),
            args.tls_key.as_deref(),
            args.tls_server_name.as_deref(),
            &args.addrs,
        )
        .map_err(|e| e.0)?;
        let options = ClientOptions { token, connect_timeout: Some(ATTEMPT_TIMEOUT), tls, ..Default::default() };
        Ok(Self { addrs, name: args.name.clone(), room: args.room.clone(), options, send_only: args.send_only })
    }

    fn addrs_text(&self) -> String {
        self.addrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    }
}

/// Retries within one round: a few quick ones, so that an outage is reported within a second.
fn reconnect_policy(addrs: usize) -> ReconnectPolicy {
    ReconnectPolicy {
        max_attempts: u32::try_from(addrs.saturating_mul(2)).unwrap_or(u32::MAX).max(3),
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(1),
        attempt_timeout: ATTEMPT_TIMEOUT,
    }
}

/// One round of attempts at `addrs` (in that order) as `name`, then joining `room` if any.
fn connect(
    settings: &Settings,
    addrs: &[SocketAddr],
    name: &str,
    room: Option<&str>,
) -> Result<FailoverClient, FailoverError> {
    let mut client = FailoverClient::connect(addrs, name, &settings.options, reconnect_policy(addrs.len()))?;
    client.set_read_timeout(Some(REPLY_TIMEOUT))?;
    match room {
        Some(room) if settings.send_only => client.join_send_only(room)?,
        // With presence: the room's members follow, then who joins and leaves.
        Some(room) => client.join_watching(room)?,
        None => {}
    }
    client.set_read_timeout(Some(POLL_INTERVAL))?;
    Ok(client)
}

fn connected_line(client: &FailoverClient, settings: &Settings) -> String {
    let addr = client.current_addr().map_or_else(|| "?".to_string(), |addr| addr.to_string());
    format!("connected to {addr} as {} in {}", settings.name, settings.room)
}

/// Why the servers refuse us for good (name, token, room), as opposed to being unreachable.
fn refusal(e: &FailoverError) -> Option<String> {
    let (FailoverError::Client(ClientError::Server { code, text })
    | FailoverError::GaveUp { last: ClientError::Server { code, text }, .. }) = e
    else {
        return None;
    };
    let what = match ErrorCode::from_u16(*code)? {
        ErrorCode::Unauthorized => "the server refused the token (--token or $FANOUT_TOKEN)",
        ErrorCode::InvalidName => "the server refused the name",
        ErrorCode::UnsupportedVersion => "the server speaks another protocol version",
        ErrorCode::InvalidRoom | ErrorCode::TooManyRooms => "the server refused the room",
        _ => return None,
    };
    Some(format!("{what}: {}", error_line(*code, text).trim_start_matches("* ")))
}

/// The error that ended a failed operation.
fn last_error(e: &FailoverError) -> &ClientError {
    match e {
        FailoverError::Client(e)
        | FailoverError::Interrupted { cause: e, .. }
        | FailoverError::GaveUp { last: e, .. } => e,
    }
}

// ----- typed input -----

/// What one typed line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Command {
    /// Send this text to the room.
    Say(String),
    /// Print the command list.
    Help,
    /// Exit.
    Quit,
    /// Leave the room and join this one.
    Join(String),
    /// Leave the room.
    Leave,
    /// Reconnect under this name.
    Nick(String),
    /// List the room's members.
    Who,
    /// List the rooms.
    Rooms,
    /// Nothing to do (an empty line).
    Nothing,
    /// Nothing sent; tell the user this.
    Hint(String),
}

const HELP: &str = "\
* commands:
*   /join ROOM   leave this room and join ROOM
*   /leave       leave this room (lines are then not sent)
*   /nick NAME   change your name (reconnects under it)
*   /who         who is in this room
*   /rooms       which rooms there are
*   /help        this list
*   /quit        exit (so do Ctrl-D and Ctrl-C)
*   //text       send \"/text\"";

/// Reads one typed line: a command, or text to send.
fn parse_line(line: &str) -> Command {
    let line = line.trim_end_matches(['\r', '\n']);
    if let Some(text) = line.strip_prefix("//") {
        return say(format!("/{text}"));
    }
    let Some(command) = line.strip_prefix('/') else {
        return if line.trim().is_empty() { Command::Nothing } else { say(line.to_string()) };
    };
    let mut words = command.split_whitespace();
    let (verb, argument, extra) = (words.next().unwrap_or(""), words.next(), words.next());
    match (verb, argument, extra) {
        ("help", None, _) => Command::Help,
        ("quit", None, _) => Command::Quit,
        ("leave", None, _) => Command::Leave,
        ("who", None, _) => Command::Who,
        ("rooms", None, _) => Command::Rooms,
        ("join", Some(room), None) if valid_room_name(room.as_bytes()) => Command::Join(room.to_string()),
        ("join", Some(room), None) => {
            Command::Hint(format!("* cannot join {room:?}: a room is 1-64 bytes of printable ASCII without space"))
        }
        ("nick", Some(name), None) => match check_name(name) {
            Ok(()) => Command::Nick(name.to_string()),
            Err(e) => Command::Hint(format!("* name unchanged: {e}")),
        },
        ("join" | "nick", _, _) => Command::Hint(format!("* usage: /{verb} {}", verb_argument(verb))),
        ("help" | "quit" | "leave" | "who" | "rooms", Some(_), _) => {
            Command::Hint(format!("* /{verb} takes no argument"))
        }
        _ => Command::Hint(format!("* unknown command /{verb}; /help lists them, //text sends \"/text\"")),
    }
}

fn verb_argument(verb: &str) -> &'static str {
    if verb == "join" {
        "ROOM"
    } else {
        "NAME"
    }
}

fn say(text: String) -> Command {
    if text.len() > PAYLOAD_BYTES_MAX {
        return Command::Hint(format!(
            "* not sent: the line is {} bytes, the limit is {PAYLOAD_BYTES_MAX}",
            text.len()
        ));
    }
    Command::Say(text)
}

fn check_name(name: &str) -> Result<(), String> {
    if valid_user_name(name.as_bytes()) {
        Ok(())
    } else {
        Err(format!("{name:?} is not a valid name (1-32 of A-Z a-z 0-9 _ - .)"))
    }
}

/// How reading the input ended.
enum InputEnd {
    /// `/quit`, Ctrl-C or Ctrl-D at a terminal.
    Quit,
    /// The end of piped input.
    Eof,
    /// Reading failed (reported already).
    Failed,
}

/// The input thread's end of the network thread.
struct Link {
    requests: SyncSender<Request>,
    /// False from a failed round of reconnection attempts until connected again.
    connected: Arc<AtomicBool>,
}

/// Acts on one typed line; false when chat should stop reading.
fn handle_line(line: &str, link: &Link, out: &Output) -> bool {
    let request = match parse_line(line) {
        Command::Quit => return false,
        Command::Nothing => return true,
        Command::Help => {
            out.line(HELP.to_string());
            return true;
        }
        Command::Hint(text) => {
            out.line(text);
            return true;
        }
        Command::Say(text) => {
            if !link.connected.load(Ordering::Relaxed) {
                out.line("* not connected: the line is sent once reconnected".to_string());
            }
            Request::Say(text)
        }
        Command::Join(room) => Request::Join(room),
        Command::Leave => Request::Leave,
        Command::Nick(name) => Request::Nick(name),
        Command::Who => Request::Who,
        Command::Rooms => Request::Rooms,
    };
    // Fails only if the network thread is gone, which ends the process anyway.
    link.requests.send(request).is_ok()
}

/// Reads lines from a pipe or file, each at most a payload long (longer ones are skipped).
fn read_piped_lines(link: &Link, out: &Output) -> InputEnd {
    let mut stdin = io::stdin().lock();
    let mut line = Vec::new();
    loop {
        line.clear();
        let limit = PAYLOAD_BYTES_MAX as u64 + 2; // the payload, "\r\n" and one byte to tell
        match (&mut stdin).take(limit + 1).read_until(b'\n', &mut line) {
            Ok(0) => return InputEnd::Eof,
            Ok(n) if n as u64 > limit => {
                out.line(format!("* not sent: a line over {PAYLOAD_BYTES_MAX} bytes"));
                if skip_line(&mut stdin).is_err() {
                    return InputEnd::Eof;
                }
            }
            Ok(_) => {
                if !handle_line(&String::from_utf8_lossy(&line), link, out) {
                    return InputEnd::Quit;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                eprintln!("fanout chat: reading stdin: {e}");
                return InputEnd::Failed;
            }
        }
    }
}

/// Discards input up to and including the next newline.
fn skip_line(input: &mut impl BufRead) -> io::Result<()> {
    loop {
        let buf = input.fill_buf()?;
        if buf.is_empty() {
            return Ok(());
        }
        if let Some(at) = memchr::memchr(b'\n', buf) {
            input.consume(at + 1);
            return Ok(());
        }
        let len = buf.len();
        input.consume(len);
    }
}

/// Asks the network thread to confirm every line sent and waits (at most `timeout`).
fn confirm_then_exit(requests: &SyncSender<Request>, timeout: Option<Duration>, quitting: bool) -> ExitCode {
    let (done, confirmed) = mpsc::channel();
    if requests.send(Request::Confirm(done)).is_err() {
        return ExitCode::FAILURE;
    }
    let all_delivered = match timeout {
        Some(timeout) => confirmed.recv_timeout(timeout).ok(),
        None => confirmed.recv().ok(),
    };
    match all_delivered {
        Some(true) => ExitCode::SUCCESS,
        _ if quitting => ExitCode::SUCCESS,
        Some(false) => {
            eprintln!("fanout chat: some lines may not have been delivered");
            ExitCode::FAILURE
        }
        None => ExitCode::FAILURE,
    }
}

// ----- the terminal -----

/// A line editor on the terminal, whose printer shows lines above the prompt.
struct Terminal {
    editor: rustyline::DefaultEditor,
    printer: Arc<Mutex<dyn rustyline::ExternalPrinter + Send>>,
}

impl Terminal {
    /// The editor when stdin and stdout are both a terminal rustyline can drive, else `None`.
    fn open() -> Option<Self> {
        use std::io::IsTerminal;
        if !io::stdin().is_terminal() || !io::stdout().is_terminal() {
            return None;
        }
        let mut editor = rustyline::DefaultEditor::new().ok()?;
        let printer = editor.create_external_printer().ok()?;
        Some(Self { editor, printer: Arc::new(Mutex::new(printer)) })
    }

    fn output(&self) -> Output {
        Output::Terminal(Arc::clone(&self.printer))
    }

    /// Reads lines until `/quit`, Ctrl-C or Ctrl-D.
    fn read_lines(mut self, link: &Link, out: &Output) -> InputEnd {
        use rustyline::error::ReadlineError;
        loop {
            match self.editor.readline("> ") {
                Ok(line) => {
                    let _ = self.editor.add_history_entry(line.as_str());
                    if !handle_line(&line, link, out) {
                        return InputEnd::Quit;
                    }
                }
                Err(ReadlineError::Interrupted | ReadlineError::Eof) => return InputEnd::Quit,
                Err(e) => {
                    eprintln!("fanout chat: reading the terminal: {e}");
                    return InputEnd::Failed;
                }
            }
        }
    }
}

/// Where lines for the user go: stdout, or above the prompt.
#[derive(Clone)]
enum Output {
    Plain,
    Terminal(Arc<Mutex<dyn rustyline::ExternalPrinter + Send>>),
}

impl Output {
    /// Prints one line (or several, for `/help`).
    fn line(&self, mut text: String) {
        text.push('\n');
        match self {
            Self::Plain => {
                let mut stdout = io::stdout().lock();
                if let Err(e) = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
                    if e.kind() == io::ErrorKind::BrokenPipe {
                        // Whoever read our output is gone (`fanout chat | head`): so are we.
                        std::process::exit(0);
                    }
                }
            }
            Self::Terminal(printer) => {
                let mut printer = printer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                let _ = printer.print(text);
            }
        }
    }

    fn status(&self, text: impl std::fmt::Display) {
        self.line(format!("* {text}"));
    }
}

/// `name: text` on one line: line breaks in the payload become spaces (as in line mode), and other
/// control characters U+FFFD, so that nobody can send escape sequences to our terminal.
fn message_line(name: &[u8], payload: &[u8]) -> String {
    let mut line = printable(name);
    line.push_str(": ");
    line.push_str(&printable(payload));
    line
}

/// `3 in lobby: alice (you), bob, carol` (the part after `* `), as line mode shows `/who`.
fn members_text(m: &Members, me: Option<u64>) -> String {
    let mut text = format!("{} in {}:", m.total, printable(&m.room));
    for (i, member) in m.members.iter().enumerate() {
        text.push_str(if i == 0 { " " } else { ", " });
        text.push_str(&printable(&member.name));
        if Some(member.session_id) == me {
            text.push_str(" (you)");
        }
    }
    let listed = m.members.len() as u64;
    if u64::from(m.total) > listed {
        text.push_str(&format!(" and {} more", u64::from(m.total) - listed));
    }
    text
}

/// `2 rooms: dev (1), lobby (3)`, as line mode shows `/rooms`.
fn rooms_text(list: &RoomList) -> String {
    let mut text = if list.total == 1 { "1 room:".to_string() } else { format!("{} rooms:", list.total) };
    for (i, (room, count)) in list.rooms.iter().enumerate() {
        text.push_str(if i == 0 { " " } else { ", " });
        text.push_str(&format!("{} ({count})", printable(room)));
    }
    let listed = list.rooms.len() as u64;
    if u64::from(list.total) > listed {
        text.push_str(&format!(" and {} more", u64::from(list.total) - listed));
    }
    text
}

/// `alice joined`, `alice left`, `alice left (connection lost)`, `guest3 is now alice` (`old`
/// is the name last known for the member), as line mode shows them.
fn presence_text(p: &PresenceEvent, old: Option<&str>) -> String {
    let name = printable(&p.name);
    match p.kind {
        PresenceKind::Joined => format!("{name} joined"),
        PresenceKind::Left => format!("{name} left"),
        PresenceKind::Lost => format!("{name} left (connection lost)"),
        PresenceKind::Renamed => format!("{} is now {name}", old.unwrap_or("someone")),
    }
}

/// `* error CODE NAME: text`.
fn error_line(code: u16, text: &str) -> String {
    let name = ErrorCode::from_u16(code).map_or("UNKNOWN", ErrorCode::name);
    format!("* error {code} {name}: {}", printable(text.as_bytes()))
}

fn printable(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| match c {
            '\n' | '\r' => ' ',
            '\t' => c,
            c if c.is_control() => char::REPLACEMENT_CHARACTER,
            c => c,
        })
        .collect()
}

fn shortened(text: &str) -> String {
    match text.char_indices().nth(SHOWN_LINE_CHARS_MAX) {
        Some((at, _)) => format!("{}…", printable(&text.as_bytes()[..at])),
        None => printable(text.as_bytes()),
    }
}

// ----- the network thread -----

/// What the input thread asks of the network thread, carried out in order.
enum Request {
    /// Publish to the room.
    Say(String),
    /// Join this room, then leave the current one.
    Join(String),
    /// Leave the room.
    Leave,
    /// Reconnect under this name.
    Nick(String),
    /// List the room's members.
    Who,
    /// List the rooms.
    Rooms,
    /// Confirm every line sent so far; answer whether all were delivered.
    Confirm(mpsc::Sender<bool>),
}

/// The network thread: owns the connection, carries out requests, prints deliveries.
struct Driver {
    settings: Settings,
    client: FailoverClient,
    /// The room lines go to; `None` after `/leave`.
    room: Option<String>,
    out: Output,
    queue: Receiver<Request>,
    input_open: bool,
    /// Lines published since the last confirmation, in order.
    unconfirmed: Vec<String>,
    /// Lines that may not have been delivered, over the whole run.
    undelivered_count: u64,
    nonce: u64,
    pause: Duration,
    /// Whether the current outage was already reported.
    outage_reported: bool,
    /// Shown to the input thread: false after a round of attempts gave up.
    connected: Arc<AtomicBool>,
    /// Names of the room's members by session id, from `MEMBERS` and `PRESENCE` (for renames).
    names: HashMap<u64, String>,
}

impl Driver {
    /// Connects (if `first` is not connected yet, retrying until it is) and greets the user.
    fn start(
        settings: Settings,
        first: Option<FailoverClient>,
        out: Output,
        queue: Receiver<Request>,
        connected: Arc<AtomicBool>,
    ) -> Self {
        let mut pause = ROUND_PAUSE_MIN;
        let client = match first {
            Some(client) => client,
            None => loop {
                match connect(&settings, &settings.addrs, &settings.name, Some(&settings.room)) {
                    Ok(client) => {
                        out.status(connected_line(&client, &settings));
                        connected.store(true, Ordering::Relaxed);
                        break client;
                    }
                    Err(e) => round_failed(&out, &settings, last_error(&e), &mut pause),
                }
            },
        };
        let room = Some(settings.room.clone());
        Self {
            settings,
            client,
            room,
            out,
            queue,
            input_open: true,
            unconfirmed: Vec::new(),
            undelivered_count: 0,
            nonce: 0,
            pause: ROUND_PAUSE_MIN,
            outage_reported: false,
            connected,
            names: HashMap::new(),
        }
    }

    /// Carries out requests and prints deliveries, until the process ends.
    fn run(mut self) {
        loop {
            self.take_requests();
            self.confirm();
            self.print_events();
        }
    }

    fn take_requests(&mut self) {
        for _ in 0..REQUESTS_PER_TURN {
            if !self.input_open {
                return;
            }
            match self.queue.try_recv() {
                Ok(request) => self.carry_out(request),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => self.input_open = false,
            }
        }
    }

    fn carry_out(&mut self, request: Request) {
        match request {
            Request::Say(text) => self.say(text),
            Request::Join(room) => self.join(room),
            Request::Leave => self.leave(),
            Request::Nick(name) => self.nick(name),
            Request::Who => self.who(),
            Request::Rooms => self.rooms(),
            Request::Confirm(done) => {
                self.confirm();
                let _ = done.send(self.undelivered_count == 0);
            }
        }
    }

    fn say(&mut self, text: String) {
        let Some(room) = self.room.clone() else {
            self.out.status("not in a room: /join ROOM");
            return;
        };
        // A publish interrupted by a failover failed to write, so the server never got it
        // whole: sending it again on the new connection cannot duplicate it.
        match self.until_connected(|client| client.publish(&room, text.as_bytes())) {
            Ok(()) => self.unconfirmed.push(text),
            Err(e) => self.out.status(format!("not sent ({e}): {}", shortened(&text))),
        }
    }

    fn join(&mut self, room: String) {
        if self.room.as_deref() == Some(room.as_str()) {
            self.out.status(format!("already in {room}"));
            return;
        }
        let send_only = self.settings.send_only;
        // Join first, so that a refused join leaves us where we were.
        let joined = self.until_connected(|client| {
            with_reply_timeout(client, |c| if send_only { c.join_send_only(&room) } else { c.join_watching(&room) })
        });
        if let Err(e) = joined {
            self.out.status(format!("cannot join {room}: {e}"));
            return;
        }
        if let Some(old) = self.room.replace(room.clone()) {
            self.leave_room(&old);
        }
        self.out.status(format!("now in {room}"));
    }

    fn leave(&mut self) {
        match self.room.take() {
            Some(room) => {
                self.leave_room(&room);
                self.out.status(format!("left {room}; not in a room: /join ROOM"));
            }
            None => self.out.status("not in a room: /join ROOM"),
        }
    }

    /// Leaves `room` on the server; a failover in between leaves it too (it is not re-joined).
    fn leave_room(&mut self, room: &str) {
        match with_reply_timeout(&mut self.client, |c| c.leave(room)) {
            Ok(()) => {}
            Err(FailoverError::Client(e)) => self.out.status(format!("leaving {room}: {e}")),
            Err(e) => self.outage(&e),
        }
    }

    /// Names are fixed by `HELLO`: a new connection (to the current server first) under the new
    /// name, in the same room, replaces the old one once it is ready.
    fn nick(&mut self, name: String) {
        self.confirm();
        let mut addrs = self.settings.addrs.clone();
        if let Some(at) = self.client.current_addr().and_then(|current| addrs.iter().position(|a| *a == current)) {
            addrs.rotate_left(at);
        }
        let result = connect(&self.settings, &addrs, &name, self.room.as_deref());
        match result {
            Ok(client) => {
                let old = std::mem::replace(&mut self.client, client);
                // A LEAVE before the old connection closes: the room sees `bob left`, not
                // `bob left (connection lost)`. Best effort; the close follows either way.
                if let (Some(room), Some(sender)) = (self.room.as_deref(), old.sender()) {
                    let _ = sender.send(&ClientFrame::Leave { room: Bytes::copy_from_slice(room.as_bytes()) });
                }
                self.settings.name = name;
                self.out.status(format!("you are now {}", self.settings.name));
            }
            Err(e) => self.out.status(format!("name unchanged, still {} ({})", self.settings.name, last_error(&e))),
        }
    }

    /// `/who`: the members of the room.
    fn who(&mut self) {
        let Some(room) = self.room.clone() else {
            self.out.status("not in a room: /join ROOM");
            return;
        };
        match self.until_connected(|client| with_reply_timeout(client, |c| c.who(&room))) {
            Ok(members) => self.print_event(Event::Members(members)),
            Err(e) => self.out.status(format!("/who: {e}")),
        }
    }

    /// `/rooms`: the rooms there are.
    fn rooms(&mut self) {
        match self.until_connected(|client| with_reply_timeout(client, FailoverClient::list_rooms)) {
            Ok(rooms) => self.print_event(Event::Rooms(rooms)),
            Err(e) => self.out.status(format!("/rooms: {e}")),
        }
    }

    /// Asks the server to confirm the lines published since the last time.
    fn confirm(&mut self) {
        if self.unconfirmed.is_empty() {
            return;
        }
        self.nonce += 1;
        let nonce = self.nonce;
        match with_reply_timeout(&mut self.client, |c| c.round_trip(nonce)) {
            Ok(()) => self.unconfirmed.clear(),
            Err(FailoverError::Client(e)) => self.report_undelivered(&format!("no confirmation: {e}")),
            Err(e) => self.outage(&e),
        }
    }

    fn print_events(&mut self) {
        for _ in 0..EVENTS_PER_TURN {
            match self.client.next_event() {
                Ok(FailoverEvent::Event(event)) => self.print_event(event),
                Ok(FailoverEvent::Reconnected(reconnected)) => self.print_reconnected(&reconnected),
                Err(e) if e.is_timeout() => return,
                Err(FailoverError::Client(e)) => {
                    self.out.status(format!("error: {e}"));
                    // Not a timeout: do not spin on it.
                    thread::sleep(POLL_INTERVAL);
                    return;
                }
                Err(e) => {
                    self.outage(&e);
                    return;
                }
            }
        }
    }

    fn print_event(&mut self, event: Event) {
        match event {
            Event::Message(m) => self.out.line(message_line(&m.name, &m.payload)),
            Event::Error { code, text } => self.out.line(error_line(code, &text)),
            Event::Members(m) => {
                let me = self.client.welcome().map(|w| w.session_id);
                self.names = m.members.iter().map(|x| (x.session_id, printable(&x.name))).collect();
                self.out.status(members_text(&m, me));
            }
            Event::Rooms(list) => self.out.status(rooms_text(&list)),
            Event::Presence(p) => {
                let old = match p.kind {
                    PresenceKind::Joined | PresenceKind::Renamed => self.names.insert(p.session_id, printable(&p.name)),
                    PresenceKind::Left | PresenceKind::Lost => self.names.remove(&p.session_id),
                };
                self.out.status(presence_text(&p, old.as_deref()));
            }
            // Stray JOINED/LEFT/PONG replies.
            _ => {}
        }
    }

    fn print_reconnected(&mut self, reconnected: &Reconnected) {
        if !self.outage_reported {
            self.out.status(format!("connection lost: {}", reconnected.cause));
        }
        self.out.status(format!("reconnected to {} (messages may have been missed)", reconnected.addr));
        self.outage_reported = false;
        self.pause = ROUND_PAUSE_MIN;
        self.connected.store(true, Ordering::Relaxed);
    }

    /// Runs `op` until it is carried out on a live connection or refused; after a failover
    /// in between (which it did not redo) it is tried again on the new connection.
    fn until_connected<T>(
        &mut self,
        mut op: impl FnMut(&mut FailoverClient) -> Result<T, FailoverError>,
    ) -> Result<T, ClientError> {
        loop {
            match op(&mut self.client) {
                Ok(value) => return Ok(value),
                Err(FailoverError::Client(e)) => return Err(e),
                Err(e) => self.outage(&e),
            }
        }
    }

    /// The connection died: what was unconfirmed is in doubt; after a give-up, pause.
    fn outage(&mut self, e: &FailoverError) {
        self.report_undelivered("connection lost");
        if let FailoverError::GaveUp { last, .. } = e {
            self.connected.store(false, Ordering::Relaxed);
            round_failed(&self.out, &self.settings, last, &mut self.pause);
            self.outage_reported = true;
        }
    }

    fn report_undelivered(&mut self, why: &str) {
        for line in self.unconfirmed.drain(..) {
            self.out.status(format!("may not have been delivered ({why}): {}", shortened(&line)));
            self.undelivered_count += 1;
        }
    }
}

/// Runs `op` with the reply timeout, then puts the polling timeout back.
fn with_reply_timeout<T>(
    client: &mut FailoverClient,
    op: impl FnOnce(&mut FailoverClient) -> Result<T, FailoverError>,
) -> Result<T, FailoverError> {
    client.set_read_timeout(Some(REPLY_TIMEOUT))?;
    let result = op(client);
    // Only fails on a dead socket, which the next read reports.
    let _ = client.set_read_timeout(Some(POLL_INTERVAL));
    result
}

/// A round of attempts gave up: says so and pauses (longer each time), or ends a send-only chat.
fn round_failed(out: &Output, settings: &Settings, last: &ClientError, pause: &mut Duration) {
    if settings.send_only {
        eprintln!("fanout chat: gave up: cannot reach {} ({last})", settings.addrs_text());
        std::process::exit(1);
    }
    out.status(format!("connection lost; retrying in {} s ({last})", pause.as_secs_f32()));
    thread::sleep(*pause);
    *pause = pause.saturating_mul(2).min(ROUND_PAUSE_MAX);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_commands() {
        assert_eq!(parse_line("hello\n"), Command::Say("hello".into()));
        assert_eq!(parse_line("  "), Command::Nothing);
        assert_eq!(parse_line("//etc/passwd"), Command::Say("/etc/passwd".into()));
        assert_eq!(parse_line("/quit"), Command::Quit);
        assert_eq!(parse_line("/help"), Command::Help);
        assert_eq!(parse_line("/join other"), Command::Join("other".into()));
        assert_eq!(parse_line("/nick bob2"), Command::Nick("bob2".into()));
        assert_eq!(parse_line("/leave"), Command::Leave);
        assert_eq!(parse_line("/who"), Command::Who);
        assert_eq!(parse_line("/rooms"), Command::Rooms);
        for refused in ["/frobnicate", "/nick bad name", "/nick b@d", "/join", "/quit now", "/"] {
            assert!(matches!(parse_line(refused), Command::Hint(_)), "{refused}");
        }
        let long = "x".repeat(PAYLOAD_BYTES_MAX + 1);
        assert!(matches!(parse_line(&long), Command::Hint(_)));
    }

    #[test]
    fn incoming_text_stays_on_one_line_and_cannot_drive_the_terminal() {
        assert_eq!(message_line(b"alice", b"a\nb\r\nc"), "alice: a b  c");
        assert_eq!(message_line(b"eve", b"\x1b[2Jgone\x07"), "eve: \u{fffd}[2Jgone\u{fffd}");
        assert_eq!(message_line(b"bob", b"\xff ok"), "bob: \u{fffd} ok");
        assert_eq!(error_line(258, "not a member of r"), "* error 258 NOT_A_MEMBER: not a member of r");
        assert_eq!(error_line(999, "?"), "* error 999 UNKNOWN: ?");
    }

    #[test]
    fn the_round_policy_tries_every_address_at_least_twice() {
        assert_eq!(reconnect_policy(1).max_attempts, 3);
        assert_eq!(reconnect_policy(4).max_attempts, 8);
    }
}
