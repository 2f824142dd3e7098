//! The lattice lookup tables of the grid quantizers (IQ1, IQ2, IQ3): for every point of the search
//! space, either its index in the type's grid or the list of grid points nearest to it. Ports
//! `iq2xs_init_impl` and `iq3xs_init_impl` of `ggml/src/ggml-quants.c` in llama.cpp b9928 (commit
//! 81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62):
//! <https://github.com/ggml-org/llama.cpp/blob/81ff7abe50b95fb81cc70a6cdba1eb1a02a48f62/ggml/src/ggml-quants.c>
//!
//! Invariant: a point is `N` levels `l ∈ [0, 2^BITS)` (8 levels of 2 bits for the IQ1/IQ2 grids, 4 of 3
//! bits for IQ3), packed as `u = Σ l_k << (BITS·k)`, at coordinates `2l + 1`. The grid is read from the
//! decoder's tables (one copy of each grid): IQ2 bytes `0x08, 0x19, 0x2b` are levels 0, 1, 2; IQ1 bytes
//! `-1, 0, 1` are 0, 1, 2; IQ3_XXS bytes are `8l + 4` (with 62 for level 7), IQ3_S bytes `2l + 1`.
//! The neighbours of an off-grid point are all grid points at the `nwant` smallest distinct squared
//! distances, ordered by (distance, grid index), exactly the list upstream builds with `qsort` and a
//! total comparator. Tables are built once per type on first use and shared by all threads.
//!
//! Only points the quantizers can ask for get a neighbour list: the IQ1/IQ2 searches clamp levels to
//! `[0, 2]`, so 2-bit points with a level 3 are left without one (upstream computes it and never reads it).

use std::sync::OnceLock;

use crate::dequant::tables::{IQ1S_GRID, IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID, IQ3S_GRID, IQ3XXS_GRID};

/// A grid of `N`-dimensional points with its map of the search space.
pub(crate) struct Lattice<const N: usize> {
    /// Grid points at coordinates `2l + 1`, by grid index.
    grid: Vec<[i8; N]>,
    /// Per packed point: the grid index (`>= 0`), or `-(offset + 1)` of its neighbour list.
    map: Vec<i32>,
    /// Neighbour lists: a count, then that many grid indices.
    neighbours: Vec<u16>,
}

/// Bits per level: 2 for 8-dimensional grids, 3 for 4-dimensional ones.
const fn bits(n: usize) -> u32 {
    if n == 8 {
        2
    } else {
        3
    }
}

/// Where a packed point lies.
pub(crate) enum Lookup<'a> {
    /// On the grid, at this index.
    OnGrid(usize),
    /// Off the grid; these grid indices are its nearest points.
    Neighbours(&'a [u16]),
}

impl<const N: usize> Lattice<N> {
    const BITS: u32 = bits(N);

    /// Builds the tables from the grid's levels (`levels[j][k]` is level `l` of coordinate `k` of point `j`),
    /// keeping `nwant` distinct distances per off-grid point; `max_level` bounds the levels searched.
    fn build(levels: Vec<[u8; N]>, nwant: usize, max_level: u8) -> Self {
        let grid: Vec<[i8; N]> = levels.iter().map(|p| p.map(|l| 2 * l as i8 + 1)).collect();
        let map_size = 1usize << (Self::BITS as usize * N);
        let mut map = vec![i32::MIN; map_size];
        for (j, p) in levels.iter().enumerate() {
            map[Self::pack(p.iter().copied())] = j as i32;
        }
        let mut neighbours = Vec::new();
        let mut dist = vec![0u32; grid.len()];
        for u in 0..map_size {
            if map[u] != i32::MIN {
                continue;
            }
            let pos: [i32; N] =
                std::array::from_fn(|k| ((u >> (Self::BITS as usize * k)) & ((1 << Self::BITS) - 1)) as i32);
            if pos.iter().any(|&l| l > i32::from(max_level)) {
                continue;
            }
            for (d, g) in dist.iter_mut().zip(&grid) {
                *d = g.iter().zip(&pos).map(|(&c, &l)| ((i32::from(c) - (2 * l + 1)).pow(2)) as u32).sum();
            }
            // The nwant smallest distinct distances.
            let mut wanted: Vec<u32> = Vec::with_capacity(nwant);
            for &d in &dist {
                if wanted.contains(&d) {
                    continue;
                }
                if wanted.len() < nwant {
                    wanted.push(d);
                    wanted.sort_unstable();
                } else if d < wanted[nwant - 1] {
                    wanted[nwant - 1] = d;
                    wanted.sort_unstable();
                }
            }
            let start = neighbours.len();
            map[u] = -(start as i32 + 1);
            neighbours.push(0u16);
            for &w in &wanted {
                neighbours.extend(dist.iter().enumerate().filter(|&(_, &d)| d == w).map(|(j, _)| j as u16));
            }
            neighbours[start] = (neighbours.len() - start - 1) as u16;
        }
        Lattice { grid, map, neighbours }
    }

    /// `Σ l_k << (BITS·k)`.
    fn pack(levels: impl Iterator<Item = u8>) -> usize {
        levels.enumerate().fold(0, |u, (k, l)| u | (usize::from(l) << (Self::BITS as usize * k)))
    }

    /// The packed index of `N` levels.
    #[inline]
    pub(crate) fn index(levels: &[i8]) -> usize {
        let mut u = 0usize;
        let mask = (1usize << Self::BITS) - 1;
        for (k, &l) in levels[..N].iter().enumerate() {
            // The mask only matters for levels that non-finite input can produce; it keeps `u` in the map.
            u |= (l as u8 as usize & mask) << (Self::BITS as usize * k);
        }
        u
    }

    /// Where the packed point `u` lies.
    #[inline]
    pub(crate) fn lookup(&self, u: usize) -> Lookup<'_> {
        let m = self.map[u];
        if m >= 0 {
            return Lookup::OnGrid(m as usize);
        }
        if m == i32::MIN {
            // Not a point the quantizers produce; treat as having no neighbours.
            return Lookup::Neighbours(&[]);
        }
        let start = (-(m + 1)) as usize;
        let n = usize::from(self.neighbours[start]);
        Lookup::Neighbours(&self.neighbours[start + 1..start + 1 + n])
    }

    /// Grid point `j` (coordinates `2l + 1`).
    #[inline]
    pub(crate) fn point(&self, j: usize) -> &[i8; N] {
        &self.grid[j]
    }

    /// Number of grid points.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.grid.len()
    }

    /// The grid index of `levels` if the point is on the grid, else its first neighbour (used only where
    /// upstream has already moved every group onto the grid).
    #[inline]
    pub(crate) fn grid_index(&self, levels: &[i8]) -> usize {
        match self.lookup(Self::index(levels)) {
            Lookup::OnGrid(j) => j,
            Lookup::Neighbours(n) => n.first().map_or(0, |&j| usize::from(j)),
        }
    }

    /// `iq2_find_best_neighbour` / `iq3_find_best_neighbour`: the neighbour minimising
    /// `Σ w·(scale·q - x)²` (first one on ties); writes its levels to `l` and returns its index.
    #[inline]
    pub(crate) fn best_neighbour(&self, neighbours: &[u16], x: &[f32], w: &[f32], scale: f32, l: &mut [i8]) -> usize {
        let mut best_d2 = f32::MAX;
        let mut best = neighbours.first().map_or(0, |&j| usize::from(j));
        for &j in neighbours {
            let pg = &self.grid[usize::from(j)];
            let mut d2 = 0.0f32;
            for i in 0..N {
                let diff = scale * f32::from(pg[i]) - x[i];
                d2 += w[i] * diff * diff;
            }
            if d2 < best_d2 {
                best_d2 = d2;
                best = usize::from(j);
            }
        }
        self.set_levels(best, l);
        best
    }

    /// Writes the levels `(c - 1)/2` of grid point `j` to `l`.
    #[inline]
    pub(crate) fn set_levels(&self, j: usize, l: &mut [i8]) {
        for (l, &c) in l[..N].iter_mut().zip(&self.grid[j]) {
            *l = (c - 1) / 2;
        }
    }
}

/// The levels of a `u64` grid (8 bytes per point) under `level_of` for each byte.
fn levels8(grid: &[u64], level_of: fn(u8) -> u8) -> Vec<[u8; 8]> {
    grid.iter().map(|e| e.to_le_bytes().map(level_of)).collect()
}

/// The levels of a `u32` grid (4 bytes per point).
fn levels4(grid: &[u32], level_of: fn(u8) -> u8) -> Vec<[u8; 4]> {
    grid.iter().map(|e| e.to_le_bytes().map(level_of)).collect()
}

/// IQ2 grid bytes `0x08, 0x19, 0x2b` → 0, 1, 2.
fn iq2_level(b: u8) -> u8 {
    match b {
        0x08 => 0,
        0x19 => 1,
        _ => 2,
    }
}

/// IQ1 grid bytes `-1, 0, 1` → 0, 1, 2.
fn iq1_level(b: u8) -> u8 {
    (b as i8 + 1) as u8
}

/// The IQ2_XXS lattice (256 points, 2 distances).
pub(crate) fn iq2_xxs() -> &'static Lattice<8> {
    static T: OnceLock<Lattice<8>> = OnceLock::new();
    T.get_or_init(|| Lattice::build(levels8(&IQ2XXS_GRID, iq2_level), 2, 2))
}

/// The IQ2_XS lattice (512 points, 2 distances).
pub(crate) fn iq2_xs() -> &'static Lattice<8> {
    static T: OnceLock<Lattice<8>> = OnceLock::new();
    T.get_or_init(|| Lattice::build(levels8(&IQ2XS_GRID, iq2_level), 2, 2))
}

/// The IQ2_S lattice (1024 points, 1 distance).
pub(crate) fn iq2_s() -> &'static Lattice<8> {
    static T: OnceLock<Lattice<8>> = OnceLock::new();
    T.get_or_init(|| Lattice::build(levels8(&IQ2S_GRID, iq2_level), 1, 2))
}

/// The IQ1_S / IQ1_M lattice (2048 points, 3 distances).
pub(crate) fn iq1() -> &'static Lattice<8> {
    static T: OnceLock<Lattice<8>> = OnceLock::new();
    T.get_or_init(|| Lattice::build(levels8(&IQ1S_GRID, iq1_level), 3, 2))
}

/// The IQ3_XXS lattice (256 points, 2 distances).
pub(crate) fn iq3_xxs() -> &'static Lattice<4> {
    static T: OnceLock<Lattice<4>> = OnceLock::new();
    T.get_or_init(|| Lattice::build(levels4(&IQ3XXS_GRID, |b| b / 8), 2, 7))
}

/// The IQ3_S lattice (512 points, 3 distances).
pub(crate) fn iq3_s() -> &'static Lattice<4> {
    static T: OnceLock<Lattice<4>> = OnceLock::new();
    T.get_or_init(|| Lattice::build(levels4(&IQ3S_GRID, |b| (b - 1) / 2), 3, 7))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packed_levels<const N: usize>(lat: &Lattice<N>, j: usize) -> usize {
        let l: Vec<i8> = lat.point(j).iter().map(|&c| (c - 1) / 2).collect();
        Lattice::<N>::index(&l)
    }

    /// The packed grids upstream builds its tables from (`kgrid_*` in the init functions), first and last
    /// entries, copied from ggml-quants.c: the levels read back from the decoder grids must match.
    #[test]
    fn grids_match_upstream_kgrid() {
        assert_eq!(packed_levels(iq2_xxs(), 1), 2);
        assert_eq!(packed_levels(iq2_xxs(), 255), 43268);
        assert_eq!(packed_levels(iq2_xs(), 3), 8);
        assert_eq!(packed_levels(iq2_xs(), 511), 43690);
        assert_eq!(packed_levels(iq2_s(), 1023), 43690);
        assert_eq!(packed_levels(iq1(), 1), 2);
        assert_eq!(packed_levels(iq1(), 15), 101);
        assert_eq!(packed_levels(iq3_xxs(), 3), 9);
        assert_eq!(packed_levels(iq3_xxs(), 255), 3992);
        assert_eq!(packed_levels(iq3_s(), 4), 7);
        assert_eq!(iq1().len(), 2048);
        assert_eq!(iq3_s().len(), 512);
    }

    /// Every searchable point is on the grid or has a non-empty neighbour list whose members are at
    /// non-decreasing distance, with increasing index within one distance, and at most `nwant` distances.
    #[test]
    fn neighbour_lists_are_ordered() {
        fn check<const N: usize>(lat: &Lattice<N>, nwant: usize, max_level: usize) {
            let b = bits(N) as usize;
            for u in 0..(1usize << (b * N)) {
                let l: Vec<i32> = (0..N).map(|k| ((u >> (b * k)) & ((1 << b) - 1)) as i32).collect();
                if l.iter().any(|&v| v as usize > max_level) {
                    continue;
                }
                match lat.lookup(u) {
                    Lookup::OnGrid(j) => assert_eq!(packed_levels(lat, j), u),
                    Lookup::Neighbours(n) => {
                        assert!(!n.is_empty(), "point {u}");
                        let d = |j: u16| -> i32 {
                            lat.point(usize::from(j))
                                .iter()
                                .zip(&l)
                                .map(|(&c, &v)| (i32::from(c) - 2 * v - 1).pow(2))
                                .sum()
                        };
                        let keys: Vec<(i32, u16)> = n.iter().map(|&j| (d(j), j)).collect();
                        assert!(keys.windows(2).all(|w| w[0] < w[1]), "point {u}");
                        let mut ds: Vec<i32> = keys.iter().map(|k| k.0).collect();
                        ds.dedup();
                        assert!(ds.len() <= nwant);
                        // Nothing closer than the farthest listed distance was left out.
                        let far = *ds.last().unwrap();
                        let closer = (0..lat.len()).filter(|&j| d(j as u16) <= far).count();
                        assert_eq!(closer, n.len(), "point {u}");
                    }
                }
            }
        }
        check(iq2_xxs(), 2, 2);
        check(iq2_s(), 1, 2);
        check(iq3_xxs(), 2, 7);
    }
}
