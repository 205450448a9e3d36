//! What `injector net` does to the packets of a link: how long they wait, which are lost, copied
//! or let ahead, and how fast the link drains. Parsed and checked before anything is changed, so
//! bad input never leaves half a fault behind.
use std::{fmt, time::Duration};

use serde::{Deserialize, Serialize};

use super::NetError;

/// Longer than any election timeout or lease a user would test; a longer delay is a typo or a
/// partition, which `injector partition` does without holding packets in memory.
pub const MAX_DELAY: Duration = Duration::from_secs(60);

/// A share of packets, 0 to 100 percent.
#[derive(Clone, Copy, Debug, Default, PartialEq, PartialOrd, Serialize, Deserialize)]
pub struct Percent(pub f64);

impl Percent {
    pub fn is_zero(self) -> bool {
        self.0 == 0.0
    }

    /// Whether a draw in [0, 1) falls in this share.
    pub fn hits(self, draw: f64) -> bool {
        draw * 100.0 < self.0
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.0)
    }
}

/// What to do to every packet of the named links. All zero means nothing is done.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Impairment {
    #[serde(with = "duration_ms")]
    pub delay: Duration,
    /// Each packet's delay is drawn uniformly from delay - jitter to delay + jitter (never
    /// below zero), as netem does; packets can then overtake each other, as with netem.
    #[serde(with = "duration_ms")]
    pub jitter: Duration,
    pub loss: Percent,
    pub duplicate: Percent,
    /// This share of packets is sent at once, ahead of the delayed ones (netem's reorder).
    pub reorder: Percent,
    /// The link drains at this many bits per second; packets queue behind each other.
    pub rate_bits_per_second: Option<u64>,
}

mod duration_ms {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(value.as_secs_f64() * 1000.0)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let ms = <f64 as serde::Deserialize>::deserialize(d)?;
        Duration::try_from_secs_f64(ms / 1000.0).map_err(serde::de::Error::custom)
    }
}

impl Impairment {
    /// Refuses what cannot be done, or would do nothing, with the reason.
    pub fn validate(&self) -> Result<(), NetError> {
        for (name, value) in [("--delay", self.delay), ("--jitter", self.jitter)] {
            if value > MAX_DELAY {
                return Err(NetError::DelayTooLong {
                    option: name,
                    value: humantime::format_duration(value).to_string(),
                });
            }
        }
        if !self.jitter.is_zero() && self.delay.is_zero() {
            return Err(NetError::Needs {
                option: "--jitter",
                reason: "jitter varies a delay",
            });
        }
        if !self.reorder.is_zero() && self.delay.is_zero() {
            return Err(NetError::Needs {
                option: "--reorder",
                reason: "reordered packets overtake delayed ones",
            });
        }
        if *self == Impairment::default() {
            return Err(NetError::NothingAsked);
        }
        Ok(())
    }

    /// "delay 50ms ±10ms, 5% loss" for the console.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.delay.is_zero() {
            let mut delay = format!("delay {}", humantime::format_duration(self.delay));
            if !self.jitter.is_zero() {
                delay.push_str(&format!(" ±{}", humantime::format_duration(self.jitter)));
            }
            parts.push(delay);
        }
        for (percent, what) in [
            (self.loss, "loss"),
            (self.duplicate, "duplicated"),
            (self.reorder, "reordered"),
        ] {
            if !percent.is_zero() {
                parts.push(format!("{percent} {what}"));
            }
        }
        if let Some(rate) = self.rate_bits_per_second {
            parts.push(format!("rate {}", format_rate(rate)));
        }
        parts.join(", ")
    }
}

/// `--delay 50ms`, `--delay 0.05` (seconds).
pub fn parse_delay(text: &str) -> Result<Duration, NetError> {
    let bad = || NetError::BadDuration(text.to_owned());
    let value = match text.parse::<f64>() {
        Ok(seconds) => Duration::try_from_secs_f64(seconds).map_err(|_| bad())?,
        Err(_) => humantime::parse_duration(text).map_err(|_| bad())?,
    };
    if value > MAX_DELAY {
        return Err(NetError::DelayTooLong {
            option: "a delay",
            value: text.to_owned(),
        });
    }
    Ok(value)
}

/// `--loss 5%`, `--loss 0.5`, from 0 to 100.
pub fn parse_percent(text: &str) -> Result<Percent, NetError> {
    match text.trim().trim_end_matches('%').parse::<f64>() {
        Ok(value) if (0.0..=100.0).contains(&value) => Ok(Percent(value)),
        _ => Err(NetError::BadPercent(text.to_owned())),
    }
}

/// tc's units: `bit`, `kbit`, `mbit`, `gbit` (bits per second) and `bps`, `kbps`, `mbps`,
/// `gbps` (bytes per second), powers of 1000; a bare number is bits per second.
pub fn parse_rate(text: &str) -> Result<u64, NetError> {
    let bad = || NetError::BadRate(text.to_owned());
    let lower = text.trim().to_ascii_lowercase();
    let split = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(split);
    let number: f64 = number.parse().map_err(|_| bad())?;
    let multiplier = match unit {
        "" | "bit" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        "bps" => 8.0,
        "kbps" => 8e3,
        "mbps" => 8e6,
        "gbps" => 8e9,
        _ => return Err(bad()),
    };
    let bits = number * multiplier;
    if !bits.is_finite() || bits < 1.0 {
        return Err(NetError::ZeroRate(text.to_owned()));
    }
    Ok(bits as u64)
}

pub fn format_rate(bits_per_second: u64) -> String {
    match bits_per_second {
        b if b >= 1_000_000_000 && b % 1_000_000 == 0 => format!("{}gbit", b as f64 / 1e9),
        b if b >= 1_000_000 && b % 1_000 == 0 => format!("{}mbit", b as f64 / 1e6),
        b if b >= 1_000 => format!("{}kbit", b as f64 / 1e3),
        b => format!("{b}bit"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_are_parsed_in_any_unit_and_capped_at_a_minute() {
        assert_eq!(parse_delay("50ms").unwrap(), Duration::from_millis(50));
        assert_eq!(parse_delay("0.25").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_delay("60s").unwrap(), MAX_DELAY);
        let error = parse_delay("61s").unwrap_err().to_string();
        assert!(error.contains("61s") && error.contains("60 s"), "{error}");
        assert!(matches!(parse_delay("soon"), Err(NetError::BadDuration(_))));
    }

    #[test]
    fn percentages_run_from_zero_to_a_hundred() {
        assert_eq!(parse_percent("5%").unwrap(), Percent(5.0));
        assert_eq!(parse_percent("0.5").unwrap(), Percent(0.5));
        assert_eq!(parse_percent("100%").unwrap(), Percent(100.0));
        for bad in ["101%", "-1", "lots", "NaN"] {
            assert!(parse_percent(bad).is_err(), "{bad}");
        }
        assert!(Percent(100.0).hits(0.999_999));
        assert!(!Percent(0.0).hits(0.0));
        assert!(Percent(50.0).hits(0.49) && !Percent(50.0).hits(0.5));
    }

    #[test]
    fn rates_use_tcs_units() {
        assert_eq!(parse_rate("1mbit").unwrap(), 1_000_000);
        assert_eq!(parse_rate("500kbit").unwrap(), 500_000);
        assert_eq!(parse_rate("1MBps").unwrap(), 8_000_000);
        assert_eq!(parse_rate("2400").unwrap(), 2400);
        assert!(matches!(parse_rate("0mbit"), Err(NetError::ZeroRate(_))));
        assert!(matches!(parse_rate("fast"), Err(NetError::BadRate(_))));
        assert!(matches!(
            parse_rate("5 furlongs"),
            Err(NetError::BadRate(_))
        ));
        assert_eq!(format_rate(1_000_000), "1mbit");
        assert_eq!(format_rate(2_500), "2.5kbit");
    }

    #[test]
    fn an_impairment_that_does_nothing_or_cannot_be_done_is_refused() {
        assert!(matches!(
            Impairment::default().validate(),
            Err(NetError::NothingAsked)
        ));
        let jitter_alone = Impairment {
            jitter: Duration::from_millis(5),
            ..Impairment::default()
        };
        assert!(matches!(
            jitter_alone.validate(),
            Err(NetError::Needs {
                option: "--jitter",
                ..
            })
        ));
        let reorder_alone = Impairment {
            reorder: Percent(10.0),
            ..Impairment::default()
        };
        assert!(reorder_alone.validate().is_err());
        let slow = Impairment {
            delay: Duration::from_millis(50),
            jitter: Duration::from_millis(10),
            loss: Percent(5.0),
            rate_bits_per_second: Some(1_000_000),
            ..Impairment::default()
        };
        slow.validate().unwrap();
        assert_eq!(slow.describe(), "delay 50ms ±10ms, 5% loss, rate 1mbit");
    }
}
