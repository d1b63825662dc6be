//! Cache capacities as users write them: below 1.0 a fraction of the trace's distinct
//! rows, from 1 up a number of rows.

use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Capacity {
    /// A fraction in (0, 1) of the distinct rows of the trace.
    Fraction(f64),
    /// An absolute number of rows.
    Rows(u64),
}

impl Capacity {
    /// The capacity in rows for a trace of `distinct` rows (at least one row).
    pub fn rows(&self, distinct: u64) -> u64 {
        match *self {
            Capacity::Fraction(f) => ((distinct as f64 * f) as u64).max(1),
            Capacity::Rows(r) => r,
        }
    }
}

impl FromStr for Capacity {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let value: f64 = text.replace('_', "").parse().map_err(|_| format!("capacity `{text}` is not a number"))?;
        Capacity::try_from(value)
    }
}

impl TryFrom<f64> for Capacity {
    type Error = String;
    fn try_from(value: f64) -> Result<Self, String> {
        let text = value.to_string();
        if !(value > 0.0 && value.is_finite()) {
            return Err(format!("capacity `{text}` must be positive"));
        }
        if value < 1.0 {
            Ok(Capacity::Fraction(value))
        } else if value.fract() == 0.0 && value <= u64::MAX as f64 {
            Ok(Capacity::Rows(value as u64))
        } else {
            Err(format!("capacity `{text}`: a capacity of 1 or more counts rows and must be a whole number"))
        }
    }
}

impl fmt::Display for Capacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Capacity::Fraction(x) => write!(f, "{x}"),
            Capacity::Rows(r) => write!(f, "{r}"),
        }
    }
}

/// Parses a comma-separated capacity list such as `0.01,0.05,100000`.
pub fn parse_capacities(list: &str) -> Result<Vec<Capacity>, String> {
    list.split(',').filter(|s| !s.trim().is_empty()).map(str::parse).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_rows_and_errors() {
        assert_eq!("0.05".parse::<Capacity>(), Ok(Capacity::Fraction(0.05)));
        assert_eq!("5000".parse::<Capacity>(), Ok(Capacity::Rows(5000)));
        assert_eq!("1".parse::<Capacity>(), Ok(Capacity::Rows(1)));
        assert!("0".parse::<Capacity>().is_err());
        assert!("-3".parse::<Capacity>().is_err());
        assert!("1.5".parse::<Capacity>().is_err());
        assert!("abc".parse::<Capacity>().is_err());
        assert_eq!(Capacity::Fraction(0.1).rows(1000), 100);
        assert_eq!(Capacity::Fraction(0.0001).rows(1000), 1);
        assert_eq!(parse_capacities("0.01, 200").unwrap(), vec![Capacity::Fraction(0.01), Capacity::Rows(200)]);
    }
}
