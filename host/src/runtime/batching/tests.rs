use std::sync::atomic::AtomicUsize;

use super::*;
use crate::runtime::{Admission, TensorData};

/// A place in a queue with room for every test's requests.
fn place() -> Entry {
    static QUEUE: std::sync::OnceLock<Admission> = std::sync::OnceLock::new();
    QUEUE
        .get_or_init(|| Admission::new(64, 1024, Duration::from_secs(10)))
        .enter()
        .unwrap()
}

fn policy(max_rows: usize, delay_ms: u64) -> BatchPolicy {
    BatchPolicy {
        max_rows,
        max_delay: Duration::from_millis(delay_ms),
        max_bytes: 1 << 20,
    }
}

fn ask(values: &[f32], parameters: &str) -> Arc<TensorRequest> {
    Arc::new(TensorRequest {
        inputs: vec![Tensor {
            name: "x".into(),
            shape: vec![values.len() as u64, 1],
            data: TensorData::Fp32(values.to_vec()),
        }],
        parameters: parameters.into(),
        outputs: vec![],
    })
}

/// A model: each row doubled; counts its calls and the rows of each.
#[derive(Clone, Default)]
struct Doubler {
    calls: Arc<Mutex<Vec<usize>>>,
}

impl Doubler {
    fn run(
        &self,
    ) -> impl FnOnce(Arc<TensorRequest>, Admitted) -> std::future::Ready<Result<Vec<Tensor>, CallError>>
    {
        let calls = self.calls.clone();
        move |request: Arc<TensorRequest>, _turn: Admitted| {
            let x = &request.inputs[0];
            calls.lock().unwrap().push(x.shape[0] as usize);
            let TensorData::Fp32(v) = &x.data else {
                unreachable!()
            };
            std::future::ready(Ok(vec![Tensor {
                name: "y".into(),
                shape: x.shape.clone(),
                data: TensorData::Fp32(v.iter().map(|a| a * 2.0).collect()),
            }]))
        }
    }

    fn calls(&self) -> Vec<usize> {
        self.calls.lock().unwrap().clone()
    }
}

fn doubled(answer: &[Tensor]) -> Vec<f32> {
    match &answer[0].data {
        TensorData::Fp32(v) => v.clone(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn concurrent_requests_of_one_shape_share_one_call_and_get_their_own_rows() {
    let batcher = Arc::new(Batcher::new("m", "1", policy(8, 200)));
    let model = Doubler::default();
    let mut answers = Vec::new();
    for i in 0..4 {
        let (b, m) = (batcher.clone(), model.clone());
        let values = vec![i as f32; i + 1];
        answers.push(tokio::spawn(async move {
            (
                values.clone(),
                b.submit(ask(&values, "{}"), place(), m.run()).await,
            )
        }));
    }
    for answer in answers {
        let (values, answer) = answer.await.unwrap();
        let want: Vec<f32> = values.iter().map(|v| v * 2.0).collect();
        assert_eq!(doubled(&answer.unwrap()), want);
    }
    // 1 + 2 + 3 + 4 rows: over 8, so two calls at most; every request answered by one of them.
    let calls = model.calls();
    assert!(
        calls.len() <= 2 && calls.iter().sum::<usize>() == 10,
        "{calls:?}"
    );
    let stats = batcher.stats();
    assert_eq!(stats.requests.load(Relaxed), 4);
    assert_eq!(stats.rows.load(Relaxed), 10);
}

#[tokio::test]
async fn a_full_batch_goes_at_once_and_other_shapes_never_join_it() {
    let batcher = Arc::new(Batcher::new("m", "1", policy(2, 10_000)));
    let model = Doubler::default();
    let started = Instant::now();
    let (b, m) = (batcher.clone(), model.clone());
    let first = tokio::spawn(async move { b.submit(ask(&[1.0], "{}"), place(), m.run()).await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    // Another parameter: a batch of its own (which waits its whole delay, so it is not awaited).
    let (b, m) = (batcher.clone(), model.clone());
    let other =
        tokio::spawn(async move { b.submit(ask(&[5.0], r#"{"t":1}"#), place(), m.run()).await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = batcher
        .submit(ask(&[2.0], "{}"), place(), model.run())
        .await
        .unwrap();
    assert_eq!(doubled(&second), vec![4.0]);
    assert_eq!(doubled(&first.await.unwrap().unwrap()), vec![2.0]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the full batch went before its delay"
    );
    assert_eq!(model.calls(), vec![2]);
    other.abort();
}

#[tokio::test]
async fn a_batch_holds_no_more_input_than_one_call_may_take() {
    // 8 bytes: two FP32 rows of one element.
    let batcher = Arc::new(Batcher::new(
        "m",
        "1",
        BatchPolicy {
            max_bytes: 8,
            ..policy(8, 100)
        },
    ));
    let model = Doubler::default();
    let mut all = Vec::new();
    for i in 0..3 {
        let (b, m) = (batcher.clone(), model.clone());
        all.push(tokio::spawn(async move {
            b.submit(ask(&[i as f32], "{}"), place(), m.run()).await
        }));
    }
    for (i, answer) in all.into_iter().enumerate() {
        assert_eq!(
            doubled(&answer.await.unwrap().unwrap()),
            vec![2.0 * i as f32]
        );
    }
    let mut calls = model.calls();
    calls.sort();
    assert_eq!(calls, vec![1, 2]);
}

#[tokio::test]
async fn a_failed_call_fails_every_request_of_its_batch() {
    let batcher = Arc::new(Batcher::new("m", "1", policy(4, 100)));
    let calls = Arc::new(AtomicUsize::new(0));
    let failing = |calls: Arc<AtomicUsize>| {
        move |_: Arc<TensorRequest>, _turn: Admitted| {
            calls.fetch_add(1, Relaxed);
            std::future::ready(Err::<Vec<Tensor>, _>(CallError::Trapped("boom".into())))
        }
    };
    let mut all = Vec::new();
    for _ in 0..3 {
        let (b, f) = (batcher.clone(), failing(calls.clone()));
        all.push(tokio::spawn(async move {
            b.submit(ask(&[1.0], "{}"), place(), f).await
        }));
    }
    for answer in all {
        assert_eq!(
            answer.await.unwrap().unwrap_err(),
            CallError::Trapped("boom".into())
        );
    }
    assert_eq!(calls.load(Relaxed), 1, "one call for the batch");
}

#[tokio::test]
async fn requests_that_hang_up_are_left_out_and_a_leader_that_hangs_up_leaves_the_rest_alone() {
    // A member that hangs up before the call: the call has the leader's rows only.
    let batcher = Arc::new(Batcher::new("m", "1", policy(8, 300)));
    let model = Doubler::default();
    let (b, m) = (batcher.clone(), model.clone());
    let leader = tokio::spawn(async move { b.submit(ask(&[1.0], "{}"), place(), m.run()).await });
    tokio::time::sleep(Duration::from_millis(30)).await;
    let (b, m) = (batcher.clone(), model.clone());
    let quitter =
        tokio::spawn(async move { b.submit(ask(&[7.0, 7.0], "{}"), place(), m.run()).await });
    tokio::time::sleep(Duration::from_millis(30)).await;
    quitter.abort();
    assert_eq!(doubled(&leader.await.unwrap().unwrap()), vec![2.0]);
    assert_eq!(model.calls(), vec![1]);

    // A leader that hangs up while it waits: who joined runs alone, and is answered.
    let model = Doubler::default();
    let (b, m) = (batcher.clone(), model.clone());
    let leader = tokio::spawn(async move { b.submit(ask(&[1.0], "{}"), place(), m.run()).await });
    tokio::time::sleep(Duration::from_millis(30)).await;
    let (b, m) = (batcher.clone(), model.clone());
    let member = tokio::spawn(async move { b.submit(ask(&[3.0], "{}"), place(), m.run()).await });
    tokio::time::sleep(Duration::from_millis(30)).await;
    leader.abort();
    assert_eq!(doubled(&member.await.unwrap().unwrap()), vec![6.0]);
    assert_eq!(model.calls(), vec![1]);
}

#[tokio::test]
async fn while_every_instance_is_busy_a_batch_keeps_gathering_past_its_delay() {
    let one = Admission::new(1, 64, Duration::from_secs(10));
    let busy = one.enter().unwrap().turn().await.unwrap();
    let batcher = Arc::new(Batcher::new("m", "1", policy(8, 10)));
    let model = Doubler::default();
    let mut all = Vec::new();
    for i in 0..3 {
        let (b, m) = (batcher.clone(), model.clone());
        let place = one.enter().unwrap();
        all.push(tokio::spawn(async move {
            b.submit(ask(&[i as f32], "{}"), place, m.run()).await
        }));
        // Each past the delay of the batch before it.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    drop(busy);
    for (i, answer) in all.into_iter().enumerate() {
        assert_eq!(
            doubled(&answer.await.unwrap().unwrap()),
            vec![2.0 * i as f32]
        );
    }
    assert_eq!(
        model.calls(),
        vec![3],
        "one call, once the instance was free"
    );
}
