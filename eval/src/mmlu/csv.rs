//! MMLU's CSV files as the original benchmark ships them: no header, one question per record,
//! `question,A,B,C,D,ANSWER`, RFC 4180 quoting (fields in double quotes may hold commas, newlines and `""`).

use std::io::Read;
use std::path::Path;

use crate::error::{EvalError, Result};

/// Largest CSV file read (the biggest MMLU file, professional_law, is under 2 MiB).
const MAX_FILE_BYTES: u64 = 64 << 20;

/// One multiple-choice question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Question {
    /// The question text.
    pub question: String,
    /// The four answer texts, for A, B, C and D.
    pub choices: [String; 4],
    /// Index (0..4) of the correct choice.
    pub answer: usize,
}

/// Read the questions of one CSV file.
pub fn read_questions(path: &Path) -> Result<Vec<Question>> {
    let io = |e: std::io::Error| EvalError::Mmlu { path: path.into(), message: e.to_string() };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut text = String::new();
    let read = file.take(MAX_FILE_BYTES + 1).read_to_string(&mut text).map_err(io)?;
    if read as u64 > MAX_FILE_BYTES {
        return Err(EvalError::Mmlu { path: path.into(), message: format!("larger than {MAX_FILE_BYTES} bytes") });
    }
    parse_questions(&text).map_err(|message| EvalError::Mmlu { path: path.into(), message })
}

/// Parse CSV text into questions; the error names the 1-based record (row) and, for quoting, the line.
pub fn parse_questions(text: &str) -> std::result::Result<Vec<Question>, String> {
    records(text)?
        .into_iter()
        .enumerate()
        .map(|(i, fields)| question(fields).map_err(|m| format!("row {}: {m}", i + 1)))
        .collect()
}

fn question(fields: Vec<String>) -> std::result::Result<Question, String> {
    let n = fields.len();
    let [question, a, b, c, d, answer]: [String; 6] =
        fields.try_into().map_err(|_| format!("expected 6 fields (question,A,B,C,D,ANSWER), found {n}"))?;
    let answer = match answer.trim() {
        "A" => 0,
        "B" => 1,
        "C" => 2,
        "D" => 3,
        other => return Err(format!("answer '{other}' is not one of A, B, C, D")),
    };
    Ok(Question { question, choices: [a, b, c, d], answer })
}

/// Split CSV text into records of fields. Blank lines between records are skipped.
fn records(text: &str) -> std::result::Result<Vec<Vec<String>>, String> {
    let mut out = Vec::new();
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    let mut at_field_start = true;
    let mut record_empty = true;
    while let Some(c) = chars.next() {
        match c {
            '"' if at_field_start => {
                let start = line;
                loop {
                    match chars.next() {
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            field.push('"');
                        }
                        Some('"') => break,
                        Some(ch) => {
                            line += usize::from(ch == '\n');
                            field.push(ch);
                        }
                        None => return Err(format!("line {start}: quoted field is never closed")),
                    }
                }
                match chars.peek() {
                    None | Some(',' | '\n' | '\r') => {}
                    Some(other) => return Err(format!("line {line}: '{other}' after a closing quote")),
                }
                at_field_start = false;
                record_empty = false;
            }
            ',' => {
                fields.push(std::mem::take(&mut field));
                at_field_start = true;
                record_empty = false;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                line += 1;
                if !record_empty {
                    fields.push(std::mem::take(&mut field));
                    out.push(std::mem::take(&mut fields));
                }
                at_field_start = true;
                record_empty = true;
            }
            c => {
                field.push(c);
                at_field_start = false;
                record_empty = false;
            }
        }
    }
    if !record_empty {
        fields.push(field);
        out.push(fields);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_fields_keep_commas_quotes_and_newlines() {
        let text = "plain q,a,b,c,d,A\r\n\"q, with \"\"quotes\"\"\nand a line\",\"x,y\",b,c,,D\n\nlast,1,2,3,4,C";
        let q = parse_questions(text).unwrap();
        assert_eq!(q.len(), 3);
        assert_eq!(q[0].answer, 0);
        assert_eq!(q[0].choices[3], "d");
        assert_eq!(q[1].question, "q, with \"quotes\"\nand a line");
        assert_eq!(q[1].choices, ["x,y".to_string(), "b".into(), "c".into(), String::new()]);
        assert_eq!(q[1].answer, 3);
        assert_eq!(q[2].answer, 2);
    }

    #[test]
    fn malformed_rows_are_named() {
        let e = parse_questions("a,b,c,d,e,A\nonly,three,fields\n").unwrap_err();
        assert_eq!(e, "row 2: expected 6 fields (question,A,B,C,D,ANSWER), found 3");
        let e = parse_questions("a,b,c,d,e,A\nq,b,c,d,e,A\nq,1,2,3,4,E\n").unwrap_err();
        assert_eq!(e, "row 3: answer 'E' is not one of A, B, C, D");
        let e = parse_questions("a,b,c,d,e,A\n\"open,b,c,d,e,A\n").unwrap_err();
        assert_eq!(e, "line 2: quoted field is never closed");
        let e = parse_questions("\"a\"x,b,c,d,e,A\n").unwrap_err();
        assert_eq!(e, "line 1: 'x' after a closing quote");
    }
}
