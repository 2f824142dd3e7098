//! Accuracy of a set of 0/1 outcomes, with its standard error.

use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};

/// Questions answered and answered right. Serialized as `{n, correct, accuracy, stderr}`; read back from
/// `n` and `correct`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Score {
    pub n: usize,
    pub correct: usize,
}

impl Score {
    /// Count one question.
    pub fn add(&mut self, right: bool) {
        self.n += 1;
        self.correct += usize::from(right);
    }

    /// Both sets together.
    pub fn merged(&self, other: &Score) -> Score {
        Score { n: self.n + other.n, correct: self.correct + other.correct }
    }

    /// Fraction right (0 with no questions).
    pub fn accuracy(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.correct as f64 / self.n as f64
        }
    }

    /// Standard error of the accuracy: the sample standard deviation of the outcomes over `sqrt(n)`,
    /// `sqrt(p(1-p)/(n-1))` (0 below two questions).
    pub fn stderr(&self) -> f64 {
        if self.n < 2 {
            return 0.0;
        }
        let p = self.accuracy();
        (p * (1.0 - p) / (self.n - 1) as f64).sqrt()
    }
}

impl Serialize for Score {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut o = s.serialize_struct("Score", 4)?;
        o.serialize_field("n", &self.n)?;
        o.serialize_field("correct", &self.correct)?;
        o.serialize_field("accuracy", &self.accuracy())?;
        o.serialize_field("stderr", &self.stderr())?;
        o.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_is_the_sample_standard_error() {
        let mut s = Score::default();
        for right in [true, true, true, false] {
            s.add(right);
        }
        assert_eq!(s.accuracy(), 0.75);
        // Outcomes 1,1,1,0: sample variance 0.25, standard error sqrt(0.25/4).
        assert!((s.stderr() - 0.25).abs() < 1e-15);
        assert_eq!(s.merged(&Score { n: 6, correct: 1 }), Score { n: 10, correct: 4 });
        assert_eq!(Score::default().stderr(), 0.0);
        let j = serde_json::to_value(s).unwrap();
        assert_eq!(j, serde_json::json!({"n": 4, "correct": 3, "accuracy": 0.75, "stderr": 0.25}));
        assert_eq!(serde_json::from_value::<Score>(j).unwrap(), s);
    }
}
