//! MMLU prompts in the original benchmark's format (hendrycks/test `evaluate.py`), and the chat templates
//! a prompt can be wrapped in on request.
//!
//! ```text
//! The following are multiple choice questions (with answers) about  high school physics.
//!
//! <dev question 1>
//! A. <choice>
//! B. <choice>
//! C. <choice>
//! D. <choice>
//! Answer: B
//!
//! ... (k dev examples) ...
//! <test question>
//! A. <choice>
//! ...
//! D. <choice>
//! Answer:
//! ```
//!
//! The double space after "about" is the original's (its `format_subject` puts a space before every word).

use super::csv::Question;

/// The answer letters.
pub const LETTERS: [&str; 4] = ["A", "B", "C", "D"];

/// `high_school_physics` -> `" high school physics"`, as the original writes it.
pub fn format_subject(subject: &str) -> String {
    subject.split('_').map(|w| format!(" {w}")).collect()
}

/// One question with its choices, ending in `Answer:`, and with ` X\n\n` when `with_answer`.
pub fn format_example(q: &Question, with_answer: bool) -> String {
    let mut s = q.question.clone();
    for (letter, choice) in LETTERS.iter().zip(&q.choices) {
        s.push_str(&format!("\n{letter}. {choice}"));
    }
    s.push_str("\nAnswer:");
    if with_answer {
        s.push_str(&format!(" {}\n\n", LETTERS[q.answer]));
    }
    s
}

/// The prompt for `q` with the first `shots` dev examples before it.
pub fn prompt(subject: &str, dev: &[Question], shots: usize, q: &Question) -> String {
    let mut s =
        format!("The following are multiple choice questions (with answers) about {}.\n\n", format_subject(subject));
    for d in dev.iter().take(shots) {
        s.push_str(&format_example(d, true));
    }
    s.push_str(&format_example(q, false));
    s
}

/// A chat template the prompt can be put in: the whole prompt becomes one user message and the assistant's
/// turn is opened; the answer letter is then scored as the assistant's first words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChatTemplate {
    /// `<|im_start|>user\n...<|im_end|>\n<|im_start|>assistant\n` (Qwen, SmolLM2, ...).
    ChatMl,
    /// `<|start_header_id|>user<|end_header_id|>\n\n...<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n`.
    Llama3,
    /// `[INST] ... [/INST]` (Llama 2 chat, Mistral instruct).
    Llama2,
}

impl serde::Serialize for ChatTemplate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// A part of a templated prompt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    /// Text, tokenized normally.
    Text(String),
    /// A template marker: one special token when the vocabulary has it as a token, text otherwise.
    Marker(&'static str),
}

impl ChatTemplate {
    /// The names `--chat-template` accepts (besides `auto`).
    pub const NAMES: &'static str = "chatml, llama3, llama2";

    /// The template called `name`.
    pub fn from_name(name: &str) -> Option<ChatTemplate> {
        match name {
            "chatml" => Some(ChatTemplate::ChatMl),
            "llama3" => Some(ChatTemplate::Llama3),
            "llama2" | "mistral" => Some(ChatTemplate::Llama2),
            _ => None,
        }
    }

    /// Which of the known templates a model's Jinja template is, by its markers.
    pub fn detect(jinja: &str) -> Option<ChatTemplate> {
        if jinja.contains("<|im_start|>") {
            Some(ChatTemplate::ChatMl)
        } else if jinja.contains("<|start_header_id|>") {
            Some(ChatTemplate::Llama3)
        } else if jinja.contains("[INST]") {
            Some(ChatTemplate::Llama2)
        } else {
            None
        }
    }

    /// The template's name.
    pub fn name(self) -> &'static str {
        match self {
            ChatTemplate::ChatMl => "chatml",
            ChatTemplate::Llama3 => "llama3",
            ChatTemplate::Llama2 => "llama2",
        }
    }

    /// One user turn holding `user`, then the opening of the assistant's turn.
    pub fn wrap(self, user: &str) -> Vec<Piece> {
        use Piece::{Marker as M, Text as T};
        match self {
            ChatTemplate::ChatMl => vec![
                M("<|im_start|>"),
                T(format!("user\n{user}")),
                M("<|im_end|>"),
                T("\n".into()),
                M("<|im_start|>"),
                T("assistant\n".into()),
            ],
            ChatTemplate::Llama3 => vec![
                M("<|start_header_id|>"),
                T("user".into()),
                M("<|end_header_id|>"),
                T(format!("\n\n{user}")),
                M("<|eot_id|>"),
                M("<|start_header_id|>"),
                T("assistant".into()),
                M("<|end_header_id|>"),
                T("\n\n".into()),
            ],
            ChatTemplate::Llama2 => vec![M("[INST]"), T(format!(" {user} ")), M("[/INST]")],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(text: &str, answer: usize) -> Question {
        Question { question: text.into(), choices: ["w".into(), "x".into(), "y".into(), "z".into()], answer }
    }

    #[test]
    fn prompt_has_the_original_layout() {
        let p = prompt("high_school_physics", &[q("D1?", 1), q("D2?", 3)], 1, &q("T?", 0));
        assert_eq!(
            p,
            "The following are multiple choice questions (with answers) about  high school physics.\n\n\
             D1?\nA. w\nB. x\nC. y\nD. z\nAnswer: B\n\n\
             T?\nA. w\nB. x\nC. y\nD. z\nAnswer:"
        );
    }

    #[test]
    fn templates_are_detected_by_their_markers() {
        let chatml = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}";
        assert_eq!(ChatTemplate::detect(chatml), Some(ChatTemplate::ChatMl));
        assert_eq!(ChatTemplate::detect("<|start_header_id|>"), Some(ChatTemplate::Llama3));
        assert_eq!(ChatTemplate::detect("{{ '[INST] ' + content }}"), Some(ChatTemplate::Llama2));
        assert_eq!(ChatTemplate::detect("{{ content }}"), None);
        assert_eq!(ChatTemplate::from_name("mistral"), Some(ChatTemplate::Llama2));
    }
}
