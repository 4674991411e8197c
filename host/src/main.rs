use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() {
    // glibc gives each thread that allocates its own malloc arena, up to 8 per core, and returns
    // little of an arena's freed memory: a host whose loads, compiles and blocking calls run on
    // short-lived threads grew ~45 MB over 1,000 reloads in arenas alone (benches/soak.sh). Two
    // arenas keep allocation concurrent on the async workers and the heap compact over weeks.
    // mimalloc (0.1.52, its v3) as the global allocator cut fraud-features' request by about 7 % of its
    // instructions (benches/request-cost.sh), but over the same 1,000 reloads the host grew 1.9×
    // (127 → 241 MB, transparent huge pages) or 1.17× with them off and purging at once, where
    // glibc with two arenas stayed flat (73 → 70 MB, same day): not taken.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before any other thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    // FERRY_LOG filters (e.g. `ferry=debug`); FERRY_LOG_FORMAT=json writes one JSON object per event,
    // with the request span's fields (request_id, and trace_id when the caller traces) included, for
    // log pipelines.
    let filter = EnvFilter::try_from_env("FERRY_LOG").unwrap_or_else(|_| "ferry=info,warn".into());
    // Colours only on a terminal, and not when NO_COLOR is set (https://no-color.org): a log file or
    // a pipeline gets plain text, and a request's span (its fields are formatted when the span
    // opens, printed or not) skips the styling, which was a third of what the span cost
    // (benches/request-cost.sh).
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        )
        .with_writer(std::io::stderr);
    if std::env::var("FERRY_LOG_FORMAT").is_ok_and(|f| f == "json") {
        logs.json().with_current_span(true).init();
    } else {
        logs.init();
    }
    match ferry::cli::Cli::parse().run() {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    }
}
