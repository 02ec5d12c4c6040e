//! The instruction sets our CPU kernels may use: what the CPU has, capped by
//! `DINO_CURATE_ISA` (`sse2`, `avx2`, `avx512` or `amx`), so that every path can be tested
//! and measured on one machine. The cap covers our own kernels (LayerNorm, GELU, softmax,
//! attention, the pooling and conv helpers) and the AMX bf16 products; the matrix products
//! that candle hands to the `gemm` crate keep gemm's own dispatch.

use std::sync::OnceLock;

/// The environment variable that caps the instruction set.
pub const ISA_VAR: &str = "DINO_CURATE_ISA";

/// Instruction-set levels, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// x86-64's baseline (4 f32 lanes).
    Sse2,
    /// AVX2 with FMA (8 lanes): most x86 laptops and desktops, AMD EPYC.
    Avx2,
    /// AVX-512 F (16 lanes).
    Avx512,
    /// AMX tiles with AVX-512 BF16 (Intel Sapphire Rapids and later).
    Amx,
}

impl Isa {
    /// Parses a cap as `DINO_CURATE_ISA` gives it.
    pub fn parse(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "sse2" => Some(Self::Sse2),
            "avx2" => Some(Self::Avx2),
            "avx512" => Some(Self::Avx512),
            "amx" => Some(Self::Amx),
            _ => None,
        }
    }

    /// Its name, as `DINO_CURATE_ISA` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sse2 => "sse2",
            Self::Avx2 => "avx2",
            Self::Avx512 => "avx512",
            Self::Amx => "amx",
        }
    }
}

/// The cap from `DINO_CURATE_ISA`: `Ok(None)` when unset, an error naming the accepted
/// values when it is set to something else.
pub fn cap_from_env() -> Result<Option<Isa>, String> {
    match std::env::var(ISA_VAR) {
        Err(_) => Ok(None),
        Ok(value) => Isa::parse(&value)
            .map(Some)
            .ok_or_else(|| format!("{ISA_VAR}={value:?} is not one of sse2, avx2, avx512, amx")),
    }
}

/// The cap in force (read once; an invalid value caps nothing, and the CLI refuses it
/// before any work).
fn cap() -> Isa {
    static CAP: OnceLock<Isa> = OnceLock::new();
    *CAP.get_or_init(|| cap_from_env().ok().flatten().unwrap_or(Isa::Amx))
}

/// Whether the kernels may use `isa`: the CPU has it and the cap allows it. AMX is checked
/// by [`super::ops::amx::available`], which calls this first.
pub fn allows(isa: Isa) -> bool {
    isa <= cap() && detected(isa)
}

#[cfg(target_arch = "x86_64")]
fn detected(isa: Isa) -> bool {
    match isa {
        Isa::Sse2 => true,
        Isa::Avx2 => std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma"),
        Isa::Avx512 | Isa::Amx => std::is_x86_feature_detected!("avx512f"),
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detected(_isa: Isa) -> bool {
    false
}

/// The best level the kernels use here, for reports.
pub fn in_use() -> Isa {
    [Isa::Amx, Isa::Avx512, Isa::Avx2]
        .into_iter()
        .find(|&isa| match isa {
            Isa::Amx => allows(Isa::Amx) && super::ops::amx::available(),
            other => allows(other),
        })
        .unwrap_or(Isa::Sse2)
}

#[cfg(test)]
mod tests {
    use super::Isa;

    #[test]
    fn names_parse_back_and_levels_order() {
        for isa in [Isa::Sse2, Isa::Avx2, Isa::Avx512, Isa::Amx] {
            assert_eq!(Isa::parse(isa.name()), Some(isa));
        }
        assert_eq!(Isa::parse(" AVX2 "), Some(Isa::Avx2));
        assert_eq!(Isa::parse("neon"), None);
        assert!(Isa::Sse2 < Isa::Avx2 && Isa::Avx512 < Isa::Amx);
    }
}
