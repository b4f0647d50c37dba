//! One tenant at its limits does not starve another: tenant A holds 100
//! membership watches open, reopens watches about 80 times a second and
//! sends 100 previews a second, while tenant B's reads, each with a 2 s
//! deadline, all answer. (Latency figures are `rapport bench`'s to report.)

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use futures::StreamExt;
use rapport_proto::rapport::segmentation::v1::*;
use tonic::Code;
use uuid::Uuid;

fn customers() -> Vec<Customer> {
    (0..20)
        .map(|i| Customer::new("ES").bought(1 + i % 5, 100 * (i + 1), 50, 10))
        .collect()
}

fn watch(tenant: Uuid, segment: &str) -> tonic::Request<WatchMembershipRequest> {
    req(
        tenant,
        WatchMembershipRequest {
            segment_id: segment.to_string(),
            start: Some(watch_membership_request::Start::AfterSequence(0)),
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_at_its_limits_does_not_starve_another() {
    let s = start().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    insert(&s.pool, a, &customers()).await;
    insert(&s.pool, b, &customers()).await;
    let mut c = s.client();
    let segment = |tenant| {
        let mut c = s.client();
        async move {
            create_segment(&mut c, tenant, dynamic("Buyers", "purchases >= 1"))
                .await
                .segment_id
        }
    };
    let (seg_a, seg_b) = (segment(a).await, segment(b).await);

    // A: 100 watches held open (each delivering its backlog).
    let mut held = Vec::new();
    for _ in 0..100 {
        let mut stream = c.watch_membership(watch(a, &seg_a)).await.answer();
        stream.next().await.unwrap().unwrap();
        held.push(stream);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(std::sync::Mutex::new(Vec::new()));
    // A: watches reopened about 80 times a second.
    let reopen = {
        let (stop, refused, seg_a, mut c) =
            (stop.clone(), refused.clone(), seg_a.clone(), s.client());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match c.watch_membership(watch(a, &seg_a)).await {
                    Ok(r) => {
                        let mut stream = r.into_inner();
                        if let Some(Err(e)) = stream.next().await {
                            refused.lock().unwrap().push(e.code());
                        }
                    }
                    Err(e) => refused.lock().unwrap().push(e.code()),
                }
                tokio::time::sleep(Duration::from_millis(12)).await;
            }
        })
    };
    // A: 100 previews a second, open loop.
    let flood = {
        let (stop, refused, c) = (stop.clone(), refused.clone(), s.client());
        tokio::spawn(async move {
            let mut calls = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let (mut c, refused) = (c.clone(), refused.clone());
                calls.push(tokio::spawn(async move {
                    let r = c
                        .preview_segment(req(
                            a,
                            preview_text("purchases >= 2 and monetary > 100", 10),
                        ))
                        .await;
                    if let Err(e) = r {
                        refused.lock().unwrap().push(e.code());
                    }
                }));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            for call in calls {
                let _ = call.await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    // B: every read answers within its 2 s deadline.
    for i in 0..40 {
        let mut r = req(
            b,
            GetSegmentRequest {
                segment_id: seg_b.clone(),
            },
        );
        r.set_timeout(Duration::from_secs(2));
        let got = c
            .get_segment(r)
            .await
            .unwrap_or_else(|e| panic!("tenant B's read {i} failed while A flooded: {e:?}"));
        assert_eq!(got.into_inner().segment.unwrap().member_count, 20);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // And B can watch too.
    let mut stream = c.watch_membership(watch(b, &seg_b)).await.answer();
    assert!(stream.next().await.unwrap().is_ok());

    stop.store(true, Ordering::Relaxed);
    reopen.await.unwrap();
    flood.await.unwrap();
    // A's own calls may be shed, but only as RESOURCE_EXHAUSTED.
    let refused = refused.lock().unwrap().clone();
    assert!(
        refused.iter().all(|c| *c == Code::ResourceExhausted),
        "{refused:?}"
    );
    // The held watches are still live.
    for stream in &mut held[..3] {
        let next = tokio::time::timeout(Duration::from_millis(200), stream.next()).await;
        assert!(!matches!(next, Ok(Some(Err(_)))), "{next:?}");
    }
    drop(held);
    s.stop().await;
}
