//! The 57 MMLU subjects, their categories (the grouping of the benchmark's own `categories.py`), and the
//! named subsets `--subset` accepts.

/// Every subject with its category.
pub const SUBJECTS: [(&str, Category); 57] = {
    use Category::{Humanities as H, Other as O, SocialSciences as S, Stem as T};
    [
        ("abstract_algebra", T),
        ("anatomy", O),
        ("astronomy", T),
        ("business_ethics", O),
        ("clinical_knowledge", O),
        ("college_biology", T),
        ("college_chemistry", T),
        ("college_computer_science", T),
        ("college_mathematics", T),
        ("college_medicine", O),
        ("college_physics", T),
        ("computer_security", T),
        ("conceptual_physics", T),
        ("econometrics", S),
        ("electrical_engineering", T),
        ("elementary_mathematics", T),
        ("formal_logic", H),
        ("global_facts", O),
        ("high_school_biology", T),
        ("high_school_chemistry", T),
        ("high_school_computer_science", T),
        ("high_school_european_history", H),
        ("high_school_geography", S),
        ("high_school_government_and_politics", S),
        ("high_school_macroeconomics", S),
        ("high_school_mathematics", T),
        ("high_school_microeconomics", S),
        ("high_school_physics", T),
        ("high_school_psychology", S),
        ("high_school_statistics", T),
        ("high_school_us_history", H),
        ("high_school_world_history", H),
        ("human_aging", O),
        ("human_sexuality", S),
        ("international_law", H),
        ("jurisprudence", H),
        ("logical_fallacies", H),
        ("machine_learning", T),
        ("management", O),
        ("marketing", O),
        ("medical_genetics", O),
        ("miscellaneous", O),
        ("moral_disputes", H),
        ("moral_scenarios", H),
        ("nutrition", O),
        ("philosophy", H),
        ("prehistory", H),
        ("professional_accounting", O),
        ("professional_law", H),
        ("professional_medicine", O),
        ("professional_psychology", S),
        ("public_relations", S),
        ("security_studies", S),
        ("sociology", S),
        ("us_foreign_policy", S),
        ("virology", O),
        ("world_religions", H),
    ]
};

/// MMLU's four categories.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Category {
    Stem,
    Humanities,
    SocialSciences,
    Other,
}

impl Category {
    /// The name used in reports and by `--subset`.
    pub fn name(self) -> &'static str {
        match self {
            Category::Stem => "stem",
            Category::Humanities => "humanities",
            Category::SocialSciences => "social_sciences",
            Category::Other => "other",
        }
    }
}

impl serde::Serialize for Category {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// The category of a subject; subjects outside the 57 (a user's own CSVs) are `Other`.
pub fn category(subject: &str) -> Category {
    SUBJECTS.iter().find(|(s, _)| *s == subject).map_or(Category::Other, |&(_, c)| c)
}

/// `quick10`: ten subjects of 100-121 test questions each (1,041 in all): three each from STEM and "other",
/// two each from the humanities and the social sciences.
pub const QUICK10: [&str; 10] = [
    "abstract_algebra",
    "college_physics",
    "computer_security",
    "business_ethics",
    "global_facts",
    "medical_genetics",
    "jurisprudence",
    "international_law",
    "us_foreign_policy",
    "public_relations",
];

/// Named subsets: `(name, what it is)`.
pub const SUBSETS: [(&str, &str); 6] = [
    ("all", "every subject found in the data directory"),
    ("quick10", "10 subjects, 1,041 test questions: abstract_algebra, college_physics, computer_security, business_ethics, global_facts, medical_genetics, jurisprudence, international_law, us_foreign_policy, public_relations"),
    ("stem", "the 18 STEM subjects"),
    ("humanities", "the 13 humanities subjects"),
    ("social_sciences", "the 12 social-science subjects"),
    ("other", "the 14 other subjects (business, health, misc.)"),
];

/// The subjects of a named subset (`all` is resolved by the caller, from the files present).
pub fn subset(name: &str) -> Option<Vec<&'static str>> {
    match name {
        "quick10" => Some(QUICK10.to_vec()),
        _ => {
            let cat = [Category::Stem, Category::Humanities, Category::SocialSciences, Category::Other]
                .into_iter()
                .find(|c| c.name() == name)?;
            Some(SUBJECTS.iter().filter(|(_, c)| *c == cat).map(|(s, _)| *s).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_partition_the_57_subjects() {
        let sizes: Vec<usize> =
            ["stem", "humanities", "social_sciences", "other"].iter().map(|n| subset(n).unwrap().len()).collect();
        assert_eq!(sizes, [18, 13, 12, 14]);
        assert_eq!(sizes.iter().sum::<usize>(), 57);
        assert!(QUICK10.iter().all(|s| SUBJECTS.iter().any(|(n, _)| n == s)));
        assert!(subset("nope").is_none());
    }
}
