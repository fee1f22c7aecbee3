//! Go's duration syntax (`time.ParseDuration`), used by `@every` and the `force-after` parameter.
//!
//! Longhorn is written in Go, so users write `90m`, `1h30m`, `1.5h`. Units: `ns`, `us`/`µs`/`μs`,
//! `ms`, `s`, `m`, `h` (no days: Go has none, and a day is not always 24 h of wall clock anyway).

use jiff::SignedDuration;

/// Why a duration string was rejected; each message shows the accepted form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("duration is empty; write a number with a unit, e.g. `90m` or `1h30m`")]
    Empty,
    #[error(
        "duration `{text}`: `{number}` has no unit; add one of h, m, s, ms, us, ns (e.g. `{number}m`)"
    )]
    MissingUnit { text: String, number: String },
    #[error(
        "duration `{text}`: unknown unit `{unit}`; use h, m, s, ms, us or ns (days are not a unit: write `24h`)"
    )]
    UnknownUnit { text: String, unit: String },
    #[error("duration `{text}`: expected a number at `{rest}`; write e.g. `1h30m` or `1.5h`")]
    ExpectedNumber { text: String, rest: String },
    #[error("duration `{text}` is too large")]
    TooLarge { text: String },
}

/// Parses a Go duration such as `1h30m`, `90m`, `1.5h`, `-2s` or `0`.
pub fn parse_go_duration(text: &str) -> Result<SignedDuration, DurationError> {
    let original = text;
    let too_large = || DurationError::TooLarge {
        text: original.to_string(),
    };
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest.is_empty() {
        return Err(DurationError::Empty);
    }
    if rest == "0" {
        return Ok(SignedDuration::ZERO);
    }
    let mut total_nanos: i128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..number_len];
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if number.is_empty() || (whole.is_empty() && fraction.is_empty()) || fraction.contains('.')
        {
            return Err(DurationError::ExpectedNumber {
                text: original.to_string(),
                rest: rest.to_string(),
            });
        }
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let unit_nanos: i128 = match unit {
            "" => {
                return Err(DurationError::MissingUnit {
                    text: original.to_string(),
                    number: number.to_string(),
                });
            }
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            other => {
                return Err(DurationError::UnknownUnit {
                    text: original.to_string(),
                    unit: other.to_string(),
                });
            }
        };
        // Exact arithmetic: whole * unit + fraction * unit / 10^len, truncated like Go.
        let whole_value: i128 = if whole.is_empty() {
            0
        } else {
            whole.parse::<i128>().map_err(|_| too_large())?
        };
        let mut component = whole_value.checked_mul(unit_nanos).ok_or_else(too_large)?;
        if !fraction.is_empty() {
            // Digits beyond 30 cannot change a nanosecond result of any sane unit.
            let digits = &fraction[..fraction.len().min(30)];
            let fraction_value: i128 = digits.parse::<i128>().map_err(|_| too_large())?;
            let scale = 10i128
                .checked_pow(digits.len() as u32)
                .ok_or_else(too_large)?;
            component = component
                .checked_add(
                    fraction_value
                        .checked_mul(unit_nanos)
                        .ok_or_else(too_large)?
                        / scale,
                )
                .ok_or_else(too_large)?;
        }
        total_nanos = total_nanos.checked_add(component).ok_or_else(too_large)?;
    }
    if negative {
        total_nanos = -total_nanos;
    }
    let seconds = i64::try_from(total_nanos.div_euclid(1_000_000_000)).map_err(|_| too_large())?;
    let nanos = total_nanos.rem_euclid(1_000_000_000) as i32;
    Ok(SignedDuration::new(seconds, nanos))
}

/// Formats a duration the way Go prints it (`1h30m0s`), for messages and round trips.
pub fn format_go_duration(duration: SignedDuration) -> String {
    let total = duration.as_nanos();
    if total == 0 {
        return "0s".to_string();
    }
    let sign = if total < 0 { "-" } else { "" };
    let total = total.unsigned_abs();
    let hours = total / 3_600_000_000_000;
    let minutes = (total / 60_000_000_000) % 60;
    let nanos_in_minute = total % 60_000_000_000;
    let seconds = nanos_in_minute / 1_000_000_000;
    let sub = nanos_in_minute % 1_000_000_000;
    let mut out = String::from(sign);
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    if sub == 0 {
        out.push_str(&format!("{seconds}s"));
    } else {
        let fraction = format!("{sub:09}");
        out.push_str(&format!("{seconds}.{}s", fraction.trim_end_matches('0')));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_examples() {
        let cases = [
            ("90m", 5400, 0),
            ("1h30m", 5400, 0),
            ("1.5h", 5400, 0),
            ("2h45m10s", 9910, 0),
            ("300ms", 0, 300_000_000),
            ("1.5s", 1, 500_000_000),
            ("-2s", -2, 0),
            ("+1m", 60, 0),
            ("0", 0, 0),
            ("1us", 0, 1_000),
            ("1µs", 0, 1_000),
            (".5m", 30, 0),
        ];
        for (text, seconds, nanos) in cases {
            assert_eq!(
                parse_go_duration(text),
                Ok(SignedDuration::new(seconds, nanos)),
                "{text}"
            );
        }
    }

    #[test]
    fn rejects_with_specific_errors() {
        assert_eq!(parse_go_duration(""), Err(DurationError::Empty));
        assert!(matches!(
            parse_go_duration("90"),
            Err(DurationError::MissingUnit { .. })
        ));
        assert!(
            matches!(parse_go_duration("1d"), Err(DurationError::UnknownUnit { unit, .. }) if unit == "d")
        );
        assert!(matches!(
            parse_go_duration("h"),
            Err(DurationError::ExpectedNumber { .. })
        ));
        assert!(matches!(
            parse_go_duration("1..5h"),
            Err(DurationError::ExpectedNumber { .. })
        ));
        assert!(matches!(
            parse_go_duration("99999999999999999999999h"),
            Err(DurationError::TooLarge { .. })
        ));
        assert!(
            parse_go_duration("1d")
                .unwrap_err()
                .to_string()
                .contains("24h")
        );
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(
            format_go_duration(SignedDuration::from_secs(5400)),
            "1h30m0s"
        );
        assert_eq!(format_go_duration(SignedDuration::from_secs(59)), "59s");
        assert_eq!(
            format_go_duration(SignedDuration::from_millis(1500)),
            "1.5s"
        );
        assert_eq!(format_go_duration(SignedDuration::ZERO), "0s");
    }

    proptest::proptest! {
        #[test]
        fn format_then_parse_round_trips(nanos in -(1i64 << 60)..(1i64 << 60)) {
            let duration = SignedDuration::from_nanos(nanos);
            proptest::prop_assert_eq!(parse_go_duration(&format_go_duration(duration)), Ok(duration));
        }

        #[test]
        fn never_panics(text in "\\PC{0,24}") {
            let _ = parse_go_duration(&text);
        }
    }
}
