//! The `skipped` table's reason comes from what failed, never from the message's words.

use dissect_data::table::SkipReason;
use dissect_experiments::ExperimentError;

#[test]
fn skip_reasons_name_what_failed() {
    let no_paragraphs = ExperimentError::NoParagraphs { id: 1, subject: "Honoré de Balzac".into() };
    assert_eq!(no_paragraphs.skip_reason(), SkipReason::NoParagraphs);
    let mismatch = ExperimentError::TokenizationMismatch { id: 2, tokens: 7, filtered: 8 };
    assert_eq!(mismatch.skip_reason(), SkipReason::TokenizationMismatch);
    assert!(mismatch.to_string().contains("hint:"), "{mismatch}");
    // A message that happens to mention paragraphs is still a plain error.
    let other = ExperimentError::Record { id: "3".into(), message: "no paragraphs could be read".into() };
    assert_eq!(other.skip_reason(), SkipReason::Error);
}
