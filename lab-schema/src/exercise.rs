//! The registry of exercises: what each one is called, where its folder and its
//! student file are, and which scenarios reproduce its incident. Students need
//! not edit this file.
//!
//! An exercise is its folder `exercises/NN-name/` (handout `README.md`,
//! `INSTRUCTOR.md`, `solution.patch`, `fixtures/wrong-*.patch`), its student
//! file (in the worker, or in the API: [`Component`]), and its entry here. The
//! worker routes each job to the exercise's handler and `verify --exercise N`
//! runs its checks (each one row of a match on [`Exercise`] that the compiler
//! keeps complete), the demo-runner's scenario list and `demo-runner exercises`
//! are made from these entries, and the test suite loops over [`Exercise::ALL`]:
//! every solution and fixture is tested by being there.

use serde::{Deserialize, Serialize};

use crate::measured::Measures;

/// One exercise of the ladder. Jobs name it by number (`"exercise": 1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum Exercise {
    /// 1. Duplicate delivery: claim the job with `SET ... NX EX` before the effect.
    DuplicateDelivery,
    /// 2. The crash window: a claim with two states (processing with a lease, then done).
    CrashWindow,
    /// 3. The double charge: an idempotency key the provider dedupes by.
    DoubleCharge,
    /// 4. The retried POST: an `Idempotency-Key` at the API's front door.
    RetriedPost,
    /// 5. The retry storm: a retry policy with backoff, jitter, a cap, and dead letters.
    RetryStorm,
    /// 6. The new jobId: a claim keyed on the business identity (the order and the action).
    NewJobId,
}

/// The program the student file is built into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Component {
    /// The worker (`worker/src/`): restarted with `./lab restart worker`.
    Worker,
    /// The API (`api/src/`): restarted with `./lab restart api`.
    Api,
}

impl Component {
    /// The cargo package and the binary.
    pub const fn package(self) -> &'static str {
        match self {
            Component::Worker => "worker",
            Component::Api => "api",
        }
    }
}

/// What the registry knows of an exercise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Info {
    pub number: u8,
    /// The folder under `exercises/`, e.g. `01-duplicate-delivery`.
    pub slug: &'static str,
    pub title: &'static str,
    /// The one file the student edits, from the repository root.
    pub student_file: &'static str,
    /// The program that file is built into.
    pub component: Component,
    /// The demo-runner scenarios that reproduce the incident.
    pub scenarios: &'static [&'static str],
    /// What those scenarios measure besides the run's totals.
    pub measures: Measures,
}

/// What a handler calls when it skips a duplicate delivery (quoted in hints).
/// One helper of the worker's context for every exercise; exercise 4's orders
/// are processed by exercise 1's handler, so it records its skips the same way.
pub const RECORD_SKIP: &str = "ctx.record_duplicate_skip";

impl Exercise {
    /// Every exercise, in order.
    pub const ALL: &'static [Exercise] = &[
        Exercise::DuplicateDelivery,
        Exercise::CrashWindow,
        Exercise::DoubleCharge,
        Exercise::RetriedPost,
        Exercise::RetryStorm,
        Exercise::NewJobId,
    ];

    /// The registry entry.
    pub const fn info(self) -> Info {
        match self {
            Exercise::DuplicateDelivery => Info {
                number: 1,
                slug: "01-duplicate-delivery",
                title: "duplicate delivery",
                student_file: "worker/src/job.rs",
                component: Component::Worker,
                scenarios: &["duplicate-observe", "duplicate-load"],
                measures: Measures::Jobs,
            },
            Exercise::CrashWindow => Info {
                number: 2,
                slug: "02-crash-window",
                title: "the crash window",
                student_file: "worker/src/crash_window.rs",
                component: Component::Worker,
                scenarios: &["crash-window"],
                measures: Measures::Crashes,
            },
            Exercise::DoubleCharge => Info {
                number: 3,
                slug: "03-double-charge",
                title: "the double charge",
                student_file: "worker/src/double_charge.rs",
                component: Component::Worker,
                scenarios: &["double-charge"],
                measures: Measures::Charges,
            },
            Exercise::RetriedPost => Info {
                number: 4,
                slug: "04-retried-post",
                title: "the retried POST",
                student_file: "api/src/idempotency.rs",
                component: Component::Api,
                scenarios: &["retried-post"],
                measures: Measures::Orders,
            },
            Exercise::RetryStorm => Info {
                number: 5,
                slug: "05-retry-storm",
                title: "the retry storm",
                student_file: "worker/src/retry_policy.rs",
                component: Component::Worker,
                scenarios: &["retry-storm"],
                measures: Measures::Storm,
            },
            Exercise::NewJobId => Info {
                number: 6,
                slug: "06-new-jobid",
                title: "the new jobId",
                student_file: "worker/src/order_email.rs",
                component: Component::Worker,
                scenarios: &["new-jobid", "unique-lock"],
                measures: Measures::Emails,
            },
        }
    }

    pub const fn number(self) -> u8 {
        self.info().number
    }

    /// The exercise with this number.
    pub fn from_number(number: u8) -> Option<Exercise> {
        Exercise::ALL.iter().copied().find(|e| e.number() == number)
    }

    /// The exercise a scenario belongs to.
    pub fn of_scenario(scenario: &str) -> Option<Exercise> {
        Exercise::ALL
            .iter()
            .copied()
            .find(|e| e.info().scenarios.contains(&scenario))
    }

    /// `exercises/01-duplicate-delivery`, from the repository root.
    pub fn folder(self) -> String {
        format!("exercises/{}", self.info().slug)
    }

    /// The instructor guide, from the repository root.
    pub fn instructor_guide(self) -> String {
        format!("{}/INSTRUCTOR.md", self.folder())
    }

    /// The reference solution, a patch of the student file.
    pub fn solution_patch(self) -> String {
        format!("{}/solution.patch", self.folder())
    }

    /// The valid numbers, for error messages: `1` or `1, 2`.
    pub fn numbers() -> String {
        Exercise::ALL
            .iter()
            .map(|e| e.number().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Default for Exercise {
    /// Jobs that name no exercise belong to exercise 1.
    fn default() -> Exercise {
        Exercise::DuplicateDelivery
    }
}

impl TryFrom<u8> for Exercise {
    type Error = String;

    fn try_from(number: u8) -> Result<Exercise, String> {
        Exercise::from_number(number).ok_or_else(|| {
            format!(
                "there is no exercise {number}; the exercises are {}",
                Exercise::numbers()
            )
        })
    }
}

impl From<Exercise> for u8 {
    fn from(exercise: Exercise) -> u8 {
        exercise.number()
    }
}

impl std::fmt::Display for Exercise {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let info = self.info();
        write!(f, "exercise {} ({})", info.number, info.title)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_folders_are_unique_and_in_order() {
        for (i, exercise) in Exercise::ALL.iter().enumerate() {
            assert_eq!(usize::from(exercise.number()), i + 1);
            assert!(exercise.info().slug.starts_with(&format!("{:02}-", i + 1)));
            assert_eq!(Exercise::from_number(exercise.number()), Some(*exercise));
        }
        assert!(Exercise::try_from(0).is_err());
        assert_eq!(Exercise::default().number(), 1);
    }

    #[test]
    fn scenarios_belong_to_one_exercise() {
        assert_eq!(
            Exercise::of_scenario("duplicate-load"),
            Some(Exercise::DuplicateDelivery)
        );
        assert_eq!(
            Exercise::of_scenario("crash-window"),
            Some(Exercise::CrashWindow)
        );
        assert_eq!(Exercise::of_scenario("load"), None);
    }
}
