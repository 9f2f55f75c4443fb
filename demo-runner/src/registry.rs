//! The demo-runner's side of the exercise registry (`lab_schema::exercise`):
//! every scenario's name, and `exercises`, the registry as a list. Students
//! need not edit this file.
//!
//! The exercises' scenarios are named once, in the registry; the scenarios of
//! no exercise once, in [`OTHER_SCENARIOS`]. The unit tests below hold both to
//! the `Scenario` subcommands, so neither list can drift from the command line.

use lab_schema::Exercise;
use lab_schema::exercise::Info;
use serde_json::{Value, json};

/// The scenarios that belong to no exercise: the benchmark and the chaos run.
pub const OTHER_SCENARIOS: &[&str] = &["load", "chaos"];

/// Every scenario's name, as `--save` files record it: the exercises' in
/// their order, then [`OTHER_SCENARIOS`].
pub fn scenario_names() -> Vec<&'static str> {
    Exercise::ALL
        .iter()
        .flat_map(|e| e.info().scenarios.iter().copied())
        .chain(OTHER_SCENARIOS.iter().copied())
        .collect()
}

/// `exercises`: one line per exercise, tab-separated (the title has spaces):
/// number, folder, title, student file, program, scenarios (comma-separated).
pub fn exercises_text() -> String {
    Exercise::ALL
        .iter()
        .map(|e| {
            let info = e.info();
            format!(
                "{}\t{}\t{}\t{}\t{}\t{}\n",
                info.number,
                info.slug,
                info.title,
                info.student_file,
                info.component.package(),
                info.scenarios.join(",")
            )
        })
        .collect()
}

/// `exercises --json`: the same, one object per exercise, in one array.
pub fn exercises_json() -> Value {
    Value::Array(
        Exercise::ALL
            .iter()
            .map(|e| {
                let Info {
                    number,
                    slug,
                    title,
                    student_file,
                    component,
                    scenarios,
                } = e.info();
                json!({
                    "number": number,
                    "slug": slug,
                    "title": title,
                    "student_file": student_file,
                    "program": component.package(),
                    "scenarios": scenarios,
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;
    use crate::{Cli, Command};

    /// Each subcommand parsed with its required positionals filled in: the
    /// scenarios come back as `Command::Scenario`, the tools as the rest.
    fn subcommands() -> Vec<(String, Command)> {
        Cli::command()
            .get_subcommands()
            .filter(|sub| sub.get_name() != "help")
            .map(|sub| {
                let mut args = vec!["demo-runner".to_string(), sub.get_name().to_string()];
                for arg in sub.get_arguments() {
                    if arg.is_positional() && arg.is_required_set() {
                        args.push("1".to_string());
                    }
                }
                let cli = Cli::try_parse_from(&args)
                    .unwrap_or_else(|err| panic!("{args:?} does not parse: {err}"));
                (sub.get_name().to_string(), cli.command)
            })
            .collect()
    }

    // Every scenario subcommand is an exercise's scenario or one of the others,
    // and every name in those lists is a subcommand, once.
    #[test]
    fn the_scenario_subcommands_are_the_registrys_and_the_others() {
        let mut subcommands: Vec<String> = subcommands()
            .into_iter()
            .filter(|(_, command)| matches!(command, Command::Scenario(_)))
            .map(|(name, _)| name)
            .collect();
        let mut listed: Vec<String> = scenario_names().into_iter().map(String::from).collect();
        subcommands.sort();
        listed.sort();
        let before = listed.len();
        listed.dedup();
        assert_eq!(listed.len(), before, "a scenario is listed twice");
        assert_eq!(subcommands, listed);
        for name in OTHER_SCENARIOS {
            assert_eq!(Exercise::of_scenario(name), None, "{name}");
        }
    }

    // A scenario's name (what its summary records) is its subcommand.
    #[test]
    fn a_scenario_is_named_after_its_subcommand() {
        let mut seen = 0;
        for (name, command) in subcommands() {
            if let Command::Scenario(scenario) = command {
                assert_eq!(scenario.name(), name);
                seen += 1;
            }
        }
        assert_eq!(seen, scenario_names().len());
    }

    #[test]
    fn exercises_lists_the_registry_one_line_each() {
        let text = exercises_text();
        assert_eq!(text.lines().count(), Exercise::ALL.len());
        assert_eq!(
            text.lines().next(),
            Some(
                "1\t01-duplicate-delivery\tduplicate delivery\tworker/src/job.rs\tworker\tduplicate-observe,duplicate-load"
            )
        );
        for line in text.lines() {
            assert_eq!(line.split('\t').count(), 6, "{line}");
        }
        let json = exercises_json();
        assert_eq!(json.as_array().map(Vec::len), Some(Exercise::ALL.len()));
        assert_eq!(json[3]["program"], "api");
        assert_eq!(json[3]["scenarios"], json!(["retried-post"]));
    }
}
