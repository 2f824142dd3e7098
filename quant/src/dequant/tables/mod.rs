//! Lookup tables of the i-quants, transcribed from llama.cpp `ggml/src/ggml-common.h` (checked against the
//! stored upstream file at commit 01243c587feceaa5d6a6c2305535ef2f549c48b8; the tables have not changed
//! since they were introduced). Grid entries keep ggml's packing: entry `i` of a `u64` grid holds 8 bytes
//! (element `j` = byte `j`, little-endian), of a `u32` grid 4 bytes.

mod iq1s_grid;
mod iq2s_grid;
mod iq2xs_grid;
mod iq2xxs_grid;
mod iq3s_grid;
mod iq3xxs_grid;
mod ksigns_iq2xs;

pub(crate) use crate::blocks::kvalues::{IQ1S_DELTA, KMASK_IQ2XS, KVALUES_FP4};

/// The decoder's copy of [`crate::blocks::kvalues::KVALUES_IQ4NL`], one table in memory.
pub(crate) static KVALUES_IQ4NL: [i8; 16] = crate::blocks::kvalues::KVALUES_IQ4NL;
pub(crate) use iq1s_grid::IQ1S_GRID;
pub(crate) use iq2s_grid::IQ2S_GRID;
pub(crate) use iq2xs_grid::IQ2XS_GRID;
pub(crate) use iq2xxs_grid::IQ2XXS_GRID;
pub(crate) use iq3s_grid::IQ3S_GRID;
pub(crate) use iq3xxs_grid::IQ3XXS_GRID;
pub(crate) use ksigns_iq2xs::KSIGNS_IQ2XS;

#[cfg(test)]
mod tests {
    use super::*;

    /// `ksigns_iq2xs[i]` is `i` with bit 7 set to the parity of its low 7 bits (an even number of
    /// minus signs per group of 8), which is how ggml built the table.
    #[test]
    fn ksigns_have_even_parity() {
        for (i, &s) in KSIGNS_IQ2XS.iter().enumerate() {
            let parity = (i as u8).count_ones() as u8 & 1;
            assert_eq!(s, i as u8 | parity << 7, "entry {i}");
        }
    }

    /// Every grid byte is one of the levels of its type, and grids have no duplicate entries.
    #[test]
    fn grid_entries_use_only_their_levels() {
        fn check_u64(grid: &[u64], levels: &[u8]) {
            let mut seen: Vec<u64> = grid.to_vec();
            seen.sort_unstable();
            seen.dedup();
            assert_eq!(seen.len(), grid.len(), "duplicate grid entries");
            for e in grid {
                assert!(e.to_le_bytes().iter().all(|b| levels.contains(b)), "{e:#018x}");
            }
        }
        fn check_u32(grid: &[u32], levels: &[u8]) {
            let mut seen: Vec<u32> = grid.to_vec();
            seen.sort_unstable();
            seen.dedup();
            assert_eq!(seen.len(), grid.len(), "duplicate grid entries");
            for e in grid {
                assert!(e.to_le_bytes().iter().all(|b| levels.contains(b)), "{e:#010x}");
            }
        }
        check_u64(&IQ2XXS_GRID, &[0x08, 0x19, 0x2b]);
        check_u64(&IQ2XS_GRID, &[0x08, 0x19, 0x2b]);
        check_u64(&IQ2S_GRID, &[0x08, 0x19, 0x2b]);
        check_u64(&IQ1S_GRID, &[0xff, 0x00, 0x01]);
        check_u32(&IQ3XXS_GRID, &[0x04, 0x0c, 0x14, 0x1c, 0x24, 0x2c, 0x34, 0x3e]);
        check_u32(&IQ3S_GRID, &[0x01, 0x03, 0x05, 0x07, 0x09, 0x0b, 0x0d, 0x0f]);
    }

    /// Entries copied by eye from ggml-common.h (first, last and one from the middle of each table).
    #[test]
    fn spot_entries_match_upstream() {
        assert_eq!((IQ2XXS_GRID[0], IQ2XXS_GRID[255]), (0x0808080808080808, 0x2b2b2b1908081908));
        assert_eq!(IQ2XS_GRID[511], 0x2b2b2b2b2b2b2b2b);
        assert_eq!(IQ2XS_GRID[7], 0x080808080819192b);
        assert_eq!(IQ2S_GRID[1023], 0x2b2b2b2b2b2b2b2b);
        assert_eq!(IQ2S_GRID[33], 0x080808082b2b2b2b);
        assert_eq!((IQ3XXS_GRID[0], IQ3XXS_GRID[255]), (0x04040404, 0x3e341c04));
        assert_eq!((IQ3S_GRID[0], IQ3S_GRID[511]), (0x01010101, 0x0f0f0101));
        assert_eq!((IQ1S_GRID[0], IQ1S_GRID[2]), (0xffffffffffffffff, 0xffffffffffff0000));
        assert_eq!(IQ1S_GRID[2047], 0x0101010101010101);
    }
}
