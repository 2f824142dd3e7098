//! The chat template an MMLU prompt is put in, from what the user asked for: none (plain prompts, as the
//! original benchmark), `auto` (the model's own template, when it is one of the known ones), or a known
//! template by name.

use std::path::Path;

use crate::error::{EvalError, Result};
use crate::mmlu::ChatTemplate;
use crate::tokenizer::Tokenizer;

/// The template asked for by `choice` (`None`, `auto`, or a name of [`ChatTemplate::NAMES`]) for the model at
/// `path` whose tokenizer is `tokenizer`.
pub fn choose(choice: Option<&str>, tokenizer: &Tokenizer, path: &Path) -> Result<Option<ChatTemplate>> {
    match choice {
        None => Ok(None),
        Some("auto") => {
            let jinja = tokenizer.chat_template().ok_or_else(|| EvalError::NoChatTemplate { path: path.into() })?;
            ChatTemplate::detect(jinja)
                .map(Some)
                .ok_or_else(|| EvalError::UnknownChatTemplate { path: path.into(), known: ChatTemplate::NAMES })
        }
        Some(name) => ChatTemplate::from_name(name)
            .map(Some)
            .ok_or_else(|| EvalError::ChatTemplateName { name: name.into(), known: ChatTemplate::NAMES }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::fixture;

    #[test]
    fn names_auto_and_none() {
        let path = fixture("stories260K");
        let tok = Tokenizer::load(&path).unwrap();
        assert_eq!(choose(None, &tok, &path).unwrap(), None);
        assert_eq!(choose(Some("llama3"), &tok, &path).unwrap(), Some(ChatTemplate::Llama3));
        let err = choose(Some("vicuna"), &tok, &path).unwrap_err().to_string();
        assert!(err.contains("--chat-template vicuna") && err.contains("chatml"), "{err}");
        // stories260K ships no chat template.
        let err = choose(Some("auto"), &tok, &path).unwrap_err().to_string();
        assert!(err.contains("has no chat template"), "{err}");
    }
}
