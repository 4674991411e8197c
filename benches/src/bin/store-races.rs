//! How often a store lets two racing conditional writes both succeed: ROUNDS rounds of eight racing
//! create-if-absent writes and eight racing compare-and-swaps on one key each. Run by
//! `benches/fleet.sh` against SeaweedFS; AWS S3 promises exactly one winner every round.
//!
//! Usage: `store-races s3://BUCKET/PREFIX [ROUNDS]` with the AWS variables in the environment.

use bytes::Bytes;
use ferry::storage::{Storage, Write};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: store-races s3://BUCKET/PREFIX [ROUNDS]"))?;
    let rounds: usize = args.next().map_or(Ok(50), |r| r.parse())?;
    let storage = ferry::storage::open(&url)?;
    let (mut double_creates, mut double_swaps) = (0, 0);
    for round in 0..rounds {
        let key = format!("create-{round}");
        let creates = futures_util::future::join_all((0..8).map(|i| {
            let (s, k) = (storage.clone(), key.clone());
            async move { s.put(&k, Bytes::from(format!("{i}")), Write::Create).await }
        }))
        .await;
        double_creates += usize::from(creates.iter().filter(|r| r.is_ok()).count() > 1);
        let key = format!("swap-{round}");
        let base = storage
            .put(&key, Bytes::from_static(b"base"), Write::Overwrite)
            .await?;
        let swaps = futures_util::future::join_all((0..8).map(|i| {
            let (s, k, v) = (storage.clone(), key.clone(), base.clone());
            async move {
                s.put(&k, Bytes::from(format!("{i}")), Write::Replace(v))
                    .await
            }
        }))
        .await;
        double_swaps += usize::from(swaps.iter().filter(|r| r.is_ok()).count() > 1);
    }
    println!(
        "racing conditional writes ({rounds} rounds of 8 racers): more than one winner in {double_creates} rounds of creates, {double_swaps} rounds of swaps"
    );
    Ok(())
}
