use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() {
    // FERRY_LOG filters (e.g. `ferry=debug`); FERRY_LOG_FORMAT=json writes one JSON object per event,
    // with the span fields (request_id, model) included, for log pipelines.
    let filter = EnvFilter::try_from_env("FERRY_LOG").unwrap_or_else(|_| "ferry=info,warn".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
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
