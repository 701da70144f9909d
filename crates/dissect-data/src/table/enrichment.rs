//! `enrichment` and `enrichment_baseline`: subject enrichment (the paper's §4).

use super::table_row;

table_row! {
    /// The attributes rate of one hidden state: the share of its top projected tokens that occur
    /// in the subject's paragraphs.
    pub struct EnrichmentRow in "enrichment" {
        /// The fact's `known_id`.
        pub id: i64,
        /// The fact's subject (several facts share one, and its paragraphs).
        pub subject: String,
        /// Index into Hugging Face's `hidden_states` (0 = the embeddings).
        pub hidden_state: i32,
        /// The position kind (`subject_last`, `last`, …).
        pub position: String,
        /// Attributes rate, in percent.
        pub rate_pct: f32,
        /// A measurement beyond the notebook's (the final hidden state), shown in the table and
        /// figure but not used by the findings.
        pub extra: bool,
    }
}

table_row! {
    /// The attributes rate of the mean input embedding of the subject's tokens: the floor the
    /// enrichment curve is compared against.
    pub struct EnrichmentBaselineRow in "enrichment_baseline" {
        /// The fact's `known_id`.
        pub id: i64,
        /// The fact's subject.
        pub subject: String,
        /// Attributes rate, in percent.
        pub rate_pct: f32,
    }
}
