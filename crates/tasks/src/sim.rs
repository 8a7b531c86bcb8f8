//! `sim`: the crawler stand-in. Sleep (the I/O), then sum (the CPU work).

use std::convert::Infallible;
use std::hint::black_box;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `{"sleep_ms": 300, "iters": 2000000}`; both default to 0. Only a JSON
/// object is a `sim` line (see the `Deserialize` impl).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SimInput {
    pub sleep_ms: u64,
    pub iters: u64,
}

/// The fields of [`SimInput`], as serde derives them.
#[derive(Deserialize)]
#[serde(default)]
struct SimFields {
    sleep_ms: u64,
    iters: u64,
}

impl Default for SimFields {
    fn default() -> Self {
        let SimInput { sleep_ms, iters } = SimInput::default();
        Self { sleep_ms, iters }
    }
}

/// A derived struct also deserializes from a JSON array (`[1,2]` would be
/// `sleep_ms` 1, `iters` 2): a line that is almost surely a mistake. This
/// asks the format for a map, so an array is `bad_input`.
impl<'de> Deserialize<'de> for SimInput {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectOnly;
        impl<'de> serde::de::Visitor<'de> for ObjectOnly {
            type Value = SimInput;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object like {\"sleep_ms\":10,\"iters\":1000}")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<SimInput, A::Error> {
                let SimFields { sleep_ms, iters } =
                    SimFields::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(SimInput { sleep_ms, iters })
            }
        }
        deserializer.deserialize_map(ObjectOnly)
    }
}

/// `{"sum": ...}`: `0 + 1 + ... + (iters - 1)`, wrapping at 2^64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimOutput {
    pub sum: u64,
}

/// Runs one `sim` task.
pub async fn sim(input: SimInput) -> Result<SimOutput, Infallible> {
    if input.sleep_ms > 0 {
        tokio::time::sleep(Duration::from_millis(input.sleep_ms)).await;
    }
    Ok(SimOutput {
        sum: iterative_sum(input.iters),
    })
}

/// The CPU part, step by step: `black_box` keeps the compiler from
/// replacing the loop with the closed form.
pub(crate) fn iterative_sum(iters: u64) -> u64 {
    let mut sum: u64 = 0;
    for i in 0..iters {
        sum = black_box(sum.wrapping_add(black_box(i)));
    }
    sum
}

/// The closed form `iters * (iters - 1) / 2 mod 2^64`, for checking results.
pub fn expected_sum(iters: u64) -> u64 {
    let n = u128::from(iters);
    (n * n.saturating_sub(1) / 2) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn loop_matches_closed_form(iters in 0u64..20_000) {
            prop_assert_eq!(iterative_sum(iters), expected_sum(iters));
        }
    }

    #[test]
    fn only_an_object_is_a_sim_line() {
        let input: SimInput = serde_json::from_str(r#"{"iters":2,"sleep_ms":1}"#).unwrap();
        assert_eq!(
            input,
            SimInput {
                sleep_ms: 1,
                iters: 2
            }
        );
        let input: SimInput = serde_json::from_str(r#"{"url":"x"}"#).unwrap();
        assert_eq!(input, SimInput::default());
        for bad in ["[1,2]", "[]", "7", "null", r#""text""#, r#"{"iters":-1}"#] {
            assert!(serde_json::from_str::<SimInput>(bad).is_err(), "{bad}");
        }
        let error = serde_json::from_str::<SimInput>("[1,2]")
            .unwrap_err()
            .to_string();
        assert!(error.contains("a JSON object"), "{error}");
    }

    #[test]
    fn closed_form_wraps() {
        // 2^33 * (2^33 - 1) / 2 = 2^65 - 2^32, which wraps to 2^64 - 2^32... mod 2^64.
        let iters = 1u64 << 33;
        let exact = (u128::from(iters) * u128::from(iters - 1)) / 2;
        assert_eq!(expected_sum(iters), exact as u64);
        assert_eq!(expected_sum(0), 0);
        assert_eq!(expected_sum(1), 0);
        assert_eq!(expected_sum(4), 6);
    }
}
