//! The drain benchmark (`./lab bench drain`) measures real drains: what it
//! counts is what each code did, and its figures come from the run.

use lab_schema::Exercise;
use lab_testkit::solution_worker;
use lab_tests::bench::{Ceiling, Code, Options, drain};
use lab_tests::starter_worker;

// With the starter every delivery sends an email; with exercise 1's reference
// solution one delivery per job does and the other is skipped, each delivery
// costs exactly one claim (SET), and the claim's size is measured. Every figure
// is a positive number from the run, Redis's limit included.
#[tokio::test(flavor = "multi_thread")]
async fn the_drain_benchmark_counts_what_each_code_did() {
    let options = Options {
        jobs: 150,
        copies: 2,
        workers: 2,
        worker_args: vec!["--concurrency".into(), "32".into()],
        persistent: false,
        trace: false,
    };
    let mut ceiling = Ceiling::new(20_000);
    let starter = Code {
        label: "starter".into(),
        exercise: Exercise::DuplicateDelivery,
        binary: starter_worker(),
    };
    let starter = drain(&starter, &options, &mut ceiling).await.unwrap();
    assert_eq!(
        (starter.deliveries, starter.effects, starter.duplicate_skips),
        (300, 300, 0),
        "{starter:?}"
    );
    assert_eq!(starter.claim_bytes, None, "the starter claims nothing");
    assert_eq!(starter.command_mix.get("set"), None, "{starter:?}");

    let reference = Code {
        label: "reference".into(),
        exercise: Exercise::DuplicateDelivery,
        binary: solution_worker(Exercise::DuplicateDelivery),
    };
    let reference = drain(&reference, &options, &mut ceiling).await.unwrap();
    assert_eq!(
        (reference.effects, reference.duplicate_skips),
        (150, 150),
        "{reference:?}"
    );
    assert_eq!(
        reference.command_mix.get("set"),
        Some(&1.0),
        "{reference:?}"
    );
    let claim = reference
        .claim_bytes
        .expect("the reference's claim key exists");
    assert!((40..200).contains(&claim), "{reference:?}");
    for d in [&starter, &reference] {
        assert!(d.seconds > 0.0 && d.deliveries_per_sec > 0.0, "{d:?}");
        assert!(
            d.redis_ceiling_per_sec > 0.0 && d.redis_cpu_us_per_delivery > 0.0,
            "{d:?}"
        );
        assert!(
            d.job_record_bytes > 0 && d.redis_bytes_per_job > 0.0,
            "{d:?}"
        );
    }
}
