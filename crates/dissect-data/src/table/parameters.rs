//! `parameters_heads`, `parameters_mlp` and `parameters_matrices`: the model's parameters in
//! vocabulary space (the paper's appendix on attention heads and MLP sub-updates).

use super::table_row;

table_row! {
    /// One head's OV output for the subject, projected to the vocabulary.
    pub struct ParametersHeadRow in "parameters_heads" {
        /// The fact's `known_id`.
        pub id: i64,
        /// 0-based block.
        pub layer: i32,
        /// 0-based head.
        pub head: i32,
        /// 0-based rank of the target in the projection.
        pub target_rank: i32,
        /// The projection's top token ids, best first.
        pub top_ids: Vec<i32>,
        /// `top_ids` decoded.
        pub top_tokens: Vec<String>,
    }
}

table_row! {
    /// One dominant MLP sub-update (coefficient × value vector) at the last subject position.
    pub struct ParametersMlpRow in "parameters_mlp" {
        /// The fact's `known_id`.
        pub id: i64,
        /// 0-based block.
        pub layer: i32,
        /// 0 = the block's largest sub-update by `|coefficient| · value_norm`.
        pub update_rank: i32,
        /// The neuron (row of the down projection).
        pub neuron: i32,
        /// The neuron's activation.
        pub coefficient: f32,
        /// The L2 norm of the neuron's value vector.
        pub value_norm: f32,
        /// 0-based rank of the target in the value vector's projection.
        pub target_rank: i32,
        /// The projection's top token ids, best first.
        pub top_ids: Vec<i32>,
        /// `top_ids` decoded.
        pub top_tokens: Vec<String>,
    }
}

table_row! {
    /// One entry of a head's OV or QK matrix in token space; model-level, not per record.
    pub struct ParametersMatrixRow in "parameters_matrices" {
        /// 0-based block.
        pub layer: i32,
        /// 0-based head.
        pub head: i32,
        /// `ov` or `qk`.
        pub circuit: String,
        /// 0 = the head's largest entry.
        pub pair_rank: i32,
        /// For OV the token attended to; for QK the querying token.
        pub source_id: i32,
        /// `source_id` decoded.
        pub source: String,
        /// For OV the token promoted; for QK the key token.
        pub destination_id: i32,
        /// `destination_id` decoded.
        pub destination: String,
        /// The matrix entry.
        pub value: f32,
    }
}
