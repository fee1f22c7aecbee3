//! Kubernetes resource quantities as byte counts (`min-changed-bytes: 4Ki`, `1M`, `1.5Gi`, `1e6`).
//!
//! Exact arithmetic: the value must be a whole number of bytes that fits in `u64`; `100m`
//! (milli-bytes) or `0.5` are rejected rather than rounded.

/// Why a quantity was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("quantity is empty; write a byte count such as `4096`, `4Ki` or `10Mi`")]
    Empty,
    #[error(
        "quantity `{0}` is not a number with an optional suffix (Ki Mi Gi Ti Pi Ei, k M G T P E, or an exponent like `1e6`)"
    )]
    Malformed(String),
    #[error("quantity `{0}` is negative; a byte count must be 0 or more")]
    Negative(String),
    #[error("quantity `{0}` is not a whole number of bytes")]
    Fractional(String),
    #[error("quantity `{0}` is larger than 2^64 - 1 bytes")]
    TooLarge(String),
}

/// Parses a Kubernetes quantity into bytes.
pub fn parse_byte_quantity(text: &str) -> Result<u64, QuantityError> {
    let malformed = || QuantityError::Malformed(text.to_string());
    if text.is_empty() {
        return Err(QuantityError::Empty);
    }
    let (negative, rest) = match text.as_bytes()[0] {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let number_len = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(number_len);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return Err(malformed());
    }
    // value = digits * 10^(exp10 - fraction digits) * 2^exp2
    let (exp10, exp2): (i32, u32) = match suffix {
        "" => (0, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        _ => {
            let exponent = suffix
                .strip_prefix(['e', 'E'])
                .filter(|e| !e.is_empty())
                .ok_or_else(malformed)?;
            let digits = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 4
            {
                return Err(malformed());
            }
            (exponent.parse::<i32>().map_err(|_| malformed())?, 0)
        }
    };
    let digits = format!("{whole}{fraction}");
    let significant = digits.trim_start_matches('0');
    let scale = exp10 - i32::try_from(fraction.len()).map_err(|_| malformed())?;
    if significant.is_empty() {
        return Ok(0);
    }
    if negative {
        return Err(QuantityError::Negative(text.to_string()));
    }
    let too_large = || QuantityError::TooLarge(text.to_string());
    let fractional = || QuantityError::Fractional(text.to_string());
    if significant.len() > 39 {
        return Err(too_large());
    }
    // value = mantissa * 10^scale * 2^exp2, computed as numerator / denominator exactly.
    let mantissa: u128 = significant.parse().map_err(|_| too_large())?;
    let mut numerator = mantissa;
    for _ in 0..scale.max(0) {
        numerator = numerator.checked_mul(10).ok_or_else(too_large)?;
    }
    numerator = numerator.checked_mul(1u128 << exp2).ok_or_else(too_large)?;
    let denominator = 10u128
        .checked_pow(scale.min(0).unsigned_abs())
        .ok_or_else(fractional)?;
    if !numerator.is_multiple_of(denominator) {
        return Err(fractional());
    }
    u64::try_from(numerator / denominator).map_err(|_| too_large())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubernetes_spellings() {
        let cases = [
            ("0", 0),
            ("4096", 4096),
            ("4Ki", 4096),
            ("1Mi", 1 << 20),
            ("1.5Gi", 3 << 29),
            ("1k", 1000),
            ("10M", 10_000_000),
            ("1e6", 1_000_000),
            ("1E3", 1000),
            ("2000m", 2),
            ("0.5k", 500),
            ("+7", 7),
            ("-0", 0),
            ("1Ei", 1 << 60),
            ("18446744073709551615", u64::MAX),
        ];
        for (text, bytes) in cases {
            assert_eq!(parse_byte_quantity(text), Ok(bytes), "{text}");
        }
    }

    #[test]
    fn rejects_with_reasons() {
        assert_eq!(parse_byte_quantity(""), Err(QuantityError::Empty));
        assert!(matches!(
            parse_byte_quantity("4KB"),
            Err(QuantityError::Malformed(_))
        ));
        assert!(matches!(
            parse_byte_quantity("Ki"),
            Err(QuantityError::Malformed(_))
        ));
        assert!(matches!(
            parse_byte_quantity("1e"),
            Err(QuantityError::Malformed(_))
        ));
        assert!(matches!(
            parse_byte_quantity("-4Ki"),
            Err(QuantityError::Negative(_))
        ));
        assert!(matches!(
            parse_byte_quantity("100m"),
            Err(QuantityError::Fractional(_))
        ));
        assert!(matches!(
            parse_byte_quantity("0.5"),
            Err(QuantityError::Fractional(_))
        ));
        assert!(matches!(
            parse_byte_quantity("16Ei"),
            Err(QuantityError::TooLarge(_))
        ));
        assert!(matches!(
            parse_byte_quantity("18446744073709551616"),
            Err(QuantityError::TooLarge(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn plain_integers_round_trip(value: u64) {
            proptest::prop_assert_eq!(parse_byte_quantity(&value.to_string()), Ok(value));
        }

        #[test]
        fn binary_suffixes_multiply(value in 0u64..1_000_000, shift in 0usize..4) {
            let suffix = ["Ki", "Mi", "Gi", "Ti"][shift];
            let expected = value.checked_mul(1u64 << (10 * (shift + 1)));
            proptest::prop_assert_eq!(parse_byte_quantity(&format!("{value}{suffix}")).ok(), expected);
        }

        #[test]
        fn never_panics(text in "\\PC{0,24}") {
            let _ = parse_byte_quantity(&text);
        }
    }
}
