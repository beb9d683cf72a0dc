//! ggml tensor types, their block layouts, and dequantisation to `f32`.
//!
//! Block layouts follow ggml's `ggml-common.h`; the dequantisation formulas follow the reference
//! (scalar) `dequantize_row_*` functions of `ggml-quants.c`. All multi-byte fields are
//! little-endian.

use std::fmt;

use half::{bf16, f16};

/// Weights per super-block of the k-quants.
const QK_K: usize = 256;

/// The storage type of a tensor in a GGUF file (ggml's `enum ggml_type`).
///
/// Every type ggml has defined is listed so that tensor sizes can be bounds-checked; only some
/// can be dequantised (see [`GgmlType::can_dequantize`]). Ids that ggml never defined, or that
/// it removed, read as [`GgmlType::Unknown`].
#[allow(non_camel_case_types, missing_docs)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ2_XXS,
    IQ2_XS,
    IQ3_XXS,
    IQ1_S,
    IQ4_NL,
    IQ3_S,
    IQ2_S,
    IQ4_XS,
    I8,
    I16,
    I32,
    I64,
    F64,
    IQ1_M,
    BF16,
    TQ1_0,
    TQ2_0,
    MXFP4,
    /// An id this reader does not know; its size cannot be checked and it cannot be read.
    Unknown(u32),
}

impl GgmlType {
    /// The type with ggml id `id`.
    pub fn from_id(id: u32) -> Self {
        use GgmlType::*;
        match id {
            0 => F32,
            1 => F16,
            2 => Q4_0,
            3 => Q4_1,
            6 => Q5_0,
            7 => Q5_1,
            8 => Q8_0,
            9 => Q8_1,
            10 => Q2_K,
            11 => Q3_K,
            12 => Q4_K,
            13 => Q5_K,
            14 => Q6_K,
            15 => Q8_K,
            16 => IQ2_XXS,
            17 => IQ2_XS,
            18 => IQ3_XXS,
            19 => IQ1_S,
            20 => IQ4_NL,
            21 => IQ3_S,
            22 => IQ2_S,
            23 => IQ4_XS,
            24 => I8,
            25 => I16,
            26 => I32,
            27 => I64,
            28 => F64,
            29 => IQ1_M,
            30 => BF16,
            34 => TQ1_0,
            35 => TQ2_0,
            39 => MXFP4,
            other => Unknown(other),
        }
    }

    /// The ggml id of this type.
    pub fn id(self) -> u32 {
        use GgmlType::*;
        match self {
            F32 => 0,
            F16 => 1,
            Q4_0 => 2,
            Q4_1 => 3,
            Q5_0 => 6,
            Q5_1 => 7,
            Q8_0 => 8,
            Q8_1 => 9,
            Q2_K => 10,
            Q3_K => 11,
            Q4_K => 12,
            Q5_K => 13,
            Q6_K => 14,
            Q8_K => 15,
            IQ2_XXS => 16,
            IQ2_XS => 17,
            IQ3_XXS => 18,
            IQ1_S => 19,
            IQ4_NL => 20,
            IQ3_S => 21,
            IQ2_S => 22,
            IQ4_XS => 23,
            I8 => 24,
            I16 => 25,
            I32 => 26,
            I64 => 27,
            F64 => 28,
            IQ1_M => 29,
            BF16 => 30,
            TQ1_0 => 34,
            TQ2_0 => 35,
            MXFP4 => 39,
            Unknown(id) => id,
        }
    }

    /// `(weights per block, bytes per block)`, or `None` for an unknown type.
    pub fn block_layout(self) -> Option<(usize, usize)> {
        use GgmlType::*;
        Some(match self {
            F32 | I32 => (1, 4),
            F16 | BF16 | I16 => (1, 2),
            I8 => (1, 1),
            I64 | F64 => (1, 8),
            Q4_0 | IQ4_NL => (32, 18),
            Q4_1 => (32, 20),
            Q5_0 => (32, 22),
            Q5_1 => (32, 24),
            Q8_0 => (32, 34),
            Q8_1 => (32, 36),
            MXFP4 => (32, 17),
            Q2_K => (QK_K, 84),
            Q3_K | IQ3_S => (QK_K, 110),
            Q4_K => (QK_K, 144),
            Q5_K => (QK_K, 176),
            Q6_K => (QK_K, 210),
            Q8_K => (QK_K, 292),
            IQ2_XXS | TQ2_0 => (QK_K, 66),
            IQ2_XS => (QK_K, 74),
            IQ3_XXS => (QK_K, 98),
            IQ1_S => (QK_K, 50),
            IQ2_S => (QK_K, 82),
            IQ4_XS => (QK_K, 136),
            IQ1_M => (QK_K, 56),
            TQ1_0 => (QK_K, 54),
            Unknown(_) => return None,
        })
    }

    /// Whether [`dequantize`] supports this type.
    pub fn can_dequantize(self) -> bool {
        use GgmlType::*;
        matches!(
            self,
            F32 | F16
                | BF16
                | F64
                | I8
                | I16
                | I32
                | Q8_0
                | Q4_0
                | Q4_1
                | Q5_0
                | Q5_1
                | Q4_K
                | Q5_K
                | Q6_K
        )
    }

    /// ggml's name for the type, e.g. `Q4_K`.
    pub fn name(self) -> String {
        match self {
            GgmlType::Unknown(id) => format!("unknown({id})"),
            other => format!("{other:?}"),
        }
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// The number of bytes that `n_elements` weights of type `ty` take, or `None` when the type is
/// unknown, `n_elements` is not a whole number of blocks, or the size overflows.
pub fn data_size(ty: GgmlType, n_elements: u64) -> Option<u64> {
    let (block, bytes) = ty.block_layout()?;
    let (block, bytes) = (block as u64, bytes as u64);
    if !n_elements.is_multiple_of(block) {
        return None;
    }
    (n_elements / block).checked_mul(bytes)
}

/// Dequantises `data`, which holds whole blocks of type `ty`, to `f32`.
///
/// Returns `None` when the type is not supported (see [`GgmlType::can_dequantize`]) or `data` is
/// not a whole number of blocks.
pub fn dequantize(ty: GgmlType, data: &[u8]) -> Option<Vec<f32>> {
    use GgmlType::*;
    if !ty.can_dequantize() {
        return None;
    }
    let (block, bytes) = ty.block_layout()?;
    if !data.len().is_multiple_of(bytes) {
        return None;
    }
    let mut out = vec![0f32; data.len() / bytes * block];
    let blocks = data.chunks_exact(bytes).zip(out.chunks_exact_mut(block));
    match ty {
        F32 => blocks.for_each(|(b, y)| y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        F16 => blocks.for_each(|(b, y)| y[0] = f16::from_le_bytes([b[0], b[1]]).to_f32()),
        BF16 => blocks.for_each(|(b, y)| y[0] = bf16::from_le_bytes([b[0], b[1]]).to_f32()),
        F64 => blocks.for_each(|(b, y)| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            y[0] = f64::from_le_bytes(a) as f32;
        }),
        I8 => blocks.for_each(|(b, y)| y[0] = f32::from(b[0] as i8)),
        I16 => blocks.for_each(|(b, y)| y[0] = f32::from(i16::from_le_bytes([b[0], b[1]]))),
        I32 => blocks.for_each(|(b, y)| y[0] = i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32),
        Q8_0 => blocks.for_each(|(b, y)| block_q8_0(b, y)),
        Q4_0 => blocks.for_each(|(b, y)| block_q4_0(b, y)),
        Q4_1 => blocks.for_each(|(b, y)| block_q4_1(b, y)),
        Q5_0 => blocks.for_each(|(b, y)| block_q5_0(b, y)),
        Q5_1 => blocks.for_each(|(b, y)| block_q5_1(b, y)),
        Q4_K => blocks.for_each(|(b, y)| block_q4_k(b, y)),
        Q5_K => blocks.for_each(|(b, y)| block_q5_k(b, y)),
        Q6_K => blocks.for_each(|(b, y)| block_q6_k(b, y)),
        _ => return None,
    }
    Some(out)
}

/// The little-endian f16 at `b[i..i + 2]`, as f32.
fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Q8_0, 34 bytes: `d: f16, qs: [i8; 32]`; `y = d * q`.
fn block_q8_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for (y, &q) in y.iter_mut().zip(&b[2..34]) {
        *y = d * f32::from(q as i8);
    }
}

/// Q4_0, 18 bytes: `d: f16, qs: [u8; 16]`; weight `j` is the low nibble of `qs[j]`, weight
/// `j + 16` the high nibble; `y = d * (q - 8)`.
fn block_q4_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for (j, &q) in b[2..18].iter().enumerate() {
        y[j] = d * f32::from(i16::from(q & 0x0F) - 8);
        y[j + 16] = d * f32::from(i16::from(q >> 4) - 8);
    }
}

/// Q4_1, 20 bytes: `d: f16, m: f16, qs: [u8; 16]` (nibbles as in Q4_0); `y = d * q + m`.
fn block_q4_1(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    for (j, &q) in b[4..20].iter().enumerate() {
        y[j] = d * f32::from(q & 0x0F) + m;
        y[j + 16] = d * f32::from(q >> 4) + m;
    }
}

/// The 5-bit values of a Q5_0/Q5_1 block: low 4 bits from the nibbles of `qs`, the fifth bit
/// of weight `i` from bit `i` of the little-endian `qh`.
fn q5_values(qh: &[u8], qs: &[u8]) -> [u8; 32] {
    let qh = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    let mut v = [0u8; 32];
    for (j, &q) in qs.iter().enumerate() {
        let hi0 = ((qh >> j) & 1) as u8;
        let hi1 = ((qh >> (j + 16)) & 1) as u8;
        v[j] = (q & 0x0F) | (hi0 << 4);
        v[j + 16] = (q >> 4) | (hi1 << 4);
    }
    v
}

/// Q5_0, 22 bytes: `d: f16, qh: [u8; 4], qs: [u8; 16]`; `y = d * (q - 16)`.
fn block_q5_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for (y, q) in y.iter_mut().zip(q5_values(&b[2..6], &b[6..22])) {
        *y = d * f32::from(i16::from(q) - 16);
    }
}

/// Q5_1, 24 bytes: `d: f16, m: f16, qh: [u8; 4], qs: [u8; 16]`; `y = d * q + m`.
fn block_q5_1(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    for (y, q) in y.iter_mut().zip(q5_values(&b[4..8], &b[8..24])) {
        *y = d * f32::from(q) + m;
    }
}

/// The 6-bit scale and min of sub-block `j` (0..8) of a Q4_K/Q5_K super-block, packed in 12
/// bytes: sub-blocks 0..4 keep theirs in the low 6 bits of bytes `j` and `j + 4`; sub-blocks
/// 4..8 keep their low 4 bits in the nibbles of byte `j + 4` and their top 2 bits in the top
/// bits of bytes `j - 4` (scale) and `j` (min).
fn scale_min_k4(j: usize, s: &[u8]) -> (f32, f32) {
    let (sc, m) = if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    };
    (f32::from(sc), f32::from(m))
}

/// Q4_K, 144 bytes: `d: f16, dmin: f16, scales: [u8; 12], qs: [u8; 128]`. Eight sub-blocks of
/// 32; each 64 weights share 32 bytes of `qs` (low nibbles first, then high nibbles);
/// `y = d * sc * q - dmin * m`.
fn block_q4_k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let scales = &b[4..16];
    let qs = &b[16..144];
    for (pair, (q, y)) in qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
        let (sc1, m1) = scale_min_k4(2 * pair, scales);
        let (sc2, m2) = scale_min_k4(2 * pair + 1, scales);
        let (d1, m1, d2, m2) = (d * sc1, dmin * m1, d * sc2, dmin * m2);
        for (l, &q) in q.iter().enumerate() {
            y[l] = d1 * f32::from(q & 0x0F) - m1;
            y[l + 32] = d2 * f32::from(q >> 4) - m2;
        }
    }
}

/// Q5_K, 176 bytes: `d: f16, dmin: f16, scales: [u8; 12], qh: [u8; 32], qs: [u8; 128]`. As Q4_K,
/// with the fifth bit of weight `l` of sub-block `s` at bit `s` of `qh[l]`.
fn block_q5_k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let scales = &b[4..16];
    let qh = &b[16..48];
    let qs = &b[48..176];
    for (pair, (q, y)) in qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
        let (sc1, m1) = scale_min_k4(2 * pair, scales);
        let (sc2, m2) = scale_min_k4(2 * pair + 1, scales);
        let (d1, m1, d2, m2) = (d * sc1, dmin * m1, d * sc2, dmin * m2);
        for (l, &q) in q.iter().enumerate() {
            let h1 = ((qh[l] >> (2 * pair)) & 1) << 4;
            let h2 = ((qh[l] >> (2 * pair + 1)) & 1) << 4;
            y[l] = d1 * f32::from((q & 0x0F) | h1) - m1;
            y[l + 32] = d2 * f32::from((q >> 4) | h2) - m2;
        }
    }
}

/// Q6_K, 210 bytes: `ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16`. Two halves of
/// 128 weights; in a half, weight `l + 32 k` (k = 0..4) takes its low 4 bits from a nibble of
/// `ql` and its top 2 bits from bits `2k..2k+2` of `qh[l]`; 16 weights share one scale;
/// `y = d * scale * (q - 32)`.
fn block_q6_k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 208);
    for half in 0..2 {
        let ql = &b[64 * half..64 * half + 64];
        let qh = &b[128 + 32 * half..128 + 32 * half + 32];
        let sc = &b[192 + 8 * half..192 + 8 * half + 8];
        let y = &mut y[128 * half..128 * half + 128];
        for l in 0..32 {
            let is = l / 16;
            let q = [
                (ql[l] & 0x0F) | ((qh[l] & 3) << 4),
                (ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4),
                (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4),
                (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4),
            ];
            for (k, q) in q.into_iter().enumerate() {
                let scale = f32::from(sc[is + 2 * k] as i8);
                y[l + 32 * k] = d * scale * f32::from(i16::from(q) - 32);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_le_bytes()
    }

    #[test]
    fn ids_round_trip() {
        for id in 0..64 {
            assert_eq!(GgmlType::from_id(id).id(), id);
        }
        assert_eq!(GgmlType::from_id(4), GgmlType::Unknown(4));
        assert_eq!(GgmlType::from_id(8).to_string(), "Q8_0");
        assert_eq!(GgmlType::Unknown(99).to_string(), "unknown(99)");
    }

    #[test]
    fn sizes() {
        assert_eq!(data_size(GgmlType::Q8_0, 64), Some(68));
        assert_eq!(data_size(GgmlType::Q4_K, 512), Some(288));
        assert_eq!(data_size(GgmlType::Q4_0, 33), None);
        assert_eq!(data_size(GgmlType::F32, u64::MAX), None);
        assert_eq!(data_size(GgmlType::Unknown(77), 32), None);
    }

    #[test]
    fn plain_floats() {
        let mut b = Vec::new();
        b.extend(1.5f32.to_le_bytes());
        b.extend((-2.0f32).to_le_bytes());
        assert_eq!(dequantize(GgmlType::F32, &b).unwrap(), vec![1.5, -2.0]);
        let b = [h(0.25), h(-3.0)].concat();
        assert_eq!(dequantize(GgmlType::F16, &b).unwrap(), vec![0.25, -3.0]);
        // bf16 of 1.0 is 0x3F80, of -0.5 is 0xBF00.
        let b = [0x80, 0x3F, 0x00, 0xBF];
        assert_eq!(dequantize(GgmlType::BF16, &b).unwrap(), vec![1.0, -0.5]);
        assert_eq!(dequantize(GgmlType::F32, &[0, 0, 0]), None);
        assert_eq!(dequantize(GgmlType::Q2_K, &[0; 84]), None);
    }

    #[test]
    fn q8_0_by_hand() {
        let mut b = h(0.5).to_vec();
        let qs: Vec<i8> = (0..32).map(|i| i as i8 - 16).collect();
        b.extend(qs.iter().map(|&q| q as u8));
        let y = dequantize(GgmlType::Q8_0, &b).unwrap();
        assert_eq!(y.len(), 32);
        assert_eq!(y[0], -8.0); // 0.5 * -16
        assert_eq!(y[16], 0.0);
        assert_eq!(y[31], 7.5); // 0.5 * 15
    }

    #[test]
    fn q4_0_by_hand() {
        // qs[0] = 0x1F: weight 0 = low nibble 15 -> (15 - 8) * 2 = 14, weight 16 = 1 -> -14.
        let mut b = h(2.0).to_vec();
        let mut qs = [0x88u8; 16]; // both nibbles 8 -> 0
        qs[0] = 0x1F;
        qs[15] = 0x0F; // weight 15 = 7 * 2 = 14, weight 31 = -8 * 2 = -16
        b.extend(qs);
        let y = dequantize(GgmlType::Q4_0, &b).unwrap();
        assert_eq!(y[0], 14.0);
        assert_eq!(y[16], -14.0);
        assert_eq!(y[15], 14.0);
        assert_eq!(y[31], -16.0);
        assert_eq!(y[5], 0.0);
    }

    #[test]
    fn q4_1_by_hand() {
        let mut b = [h(0.5), h(-1.0)].concat();
        let mut qs = [0u8; 16];
        qs[3] = 0xA4; // weight 3 = 4 * 0.5 - 1 = 1, weight 19 = 10 * 0.5 - 1 = 4
        b.extend(qs);
        let y = dequantize(GgmlType::Q4_1, &b).unwrap();
        assert_eq!(y[3], 1.0);
        assert_eq!(y[19], 4.0);
        assert_eq!(y[0], -1.0);
    }

    #[test]
    fn q5_0_and_q5_1_by_hand() {
        // Weight 2: low nibble 3, fifth bit set (qh bit 2) -> 19 - 16 = 3.
        // Weight 18: high nibble 0xF, fifth bit set (qh bit 18) -> 31 - 16 = 15.
        // Weight 17: high nibble 0, fifth bit clear -> -16.
        let qh: u32 = (1 << 2) | (1 << 18);
        let mut qs = [0u8; 16];
        qs[2] = 0xF3;
        let mut b = h(1.0).to_vec();
        b.extend(qh.to_le_bytes());
        b.extend(qs);
        let y = dequantize(GgmlType::Q5_0, &b).unwrap();
        assert_eq!((y[2], y[18], y[17]), (3.0, 15.0, -16.0));

        let mut b = [h(0.5), h(10.0)].concat();
        b.extend(qh.to_le_bytes());
        b.extend(qs);
        let y = dequantize(GgmlType::Q5_1, &b).unwrap();
        // 19 * 0.5 + 10, 31 * 0.5 + 10, 0 * 0.5 + 10
        assert_eq!((y[2], y[18], y[17]), (19.5, 25.5, 10.0));
    }

    /// Packs eight 6-bit scales and mins as Q4_K/Q5_K do.
    fn pack_scales(sc: [u8; 8], m: [u8; 8]) -> [u8; 12] {
        let mut s = [0u8; 12];
        for j in 0..4 {
            s[j] = (sc[j] & 63) | ((sc[j + 4] >> 4) << 6);
            s[j + 4] = (m[j] & 63) | ((m[j + 4] >> 4) << 6);
            s[j + 8] = (sc[j + 4] & 0x0F) | ((m[j + 4] & 0x0F) << 4);
        }
        s
    }

    #[test]
    fn k_scales_unpack() {
        let sc = [1, 2, 63, 4, 33, 50, 7, 63];
        let m = [9, 0, 17, 63, 48, 5, 62, 1];
        let s = pack_scales(sc, m);
        for j in 0..8 {
            assert_eq!(
                scale_min_k4(j, &s),
                (f32::from(sc[j]), f32::from(m[j])),
                "j={j}"
            );
        }
    }

    #[test]
    fn q4_k_by_hand() {
        let sc = [1, 2, 3, 4, 5, 6, 7, 40];
        let m = [0, 1, 0, 0, 0, 0, 0, 33];
        let mut b = [h(0.5), h(0.25)].concat();
        b.extend(pack_scales(sc, m));
        let mut qs = [0u8; 128];
        qs[0] = 0x3A; // weight 0 (sub-block 0): 0.5*1*10 - 0 = 5; weight 32 (sub-block 1): 0.5*2*3 - 0.25*1 = 2.75
        qs[127] = 0xF1; // weight 223 (sub 6): 0.5*7*1 = 3.5; weight 255 (sub 7): 0.5*40*15 - 0.25*33 = 291.75
        b.extend(qs);
        assert_eq!(b.len(), 144);
        let y = dequantize(GgmlType::Q4_K, &b).unwrap();
        assert_eq!(y.len(), 256);
        assert_eq!(y[0], 5.0);
        assert_eq!(y[32], 2.75);
        assert_eq!(y[33], -0.25);
        assert_eq!(y[223], 3.5);
        assert_eq!(y[255], 291.75);
    }

    #[test]
    fn q5_k_by_hand() {
        let sc = [1, 2, 3, 4, 5, 6, 7, 8];
        let m = [1, 0, 0, 0, 0, 0, 0, 2];
        let mut b = [h(1.0), h(0.5)].concat();
        b.extend(pack_scales(sc, m));
        let mut qh = [0u8; 32];
        qh[0] = 0b0000_0001; // weight 0 (sub-block 0) gets +16
        qh[31] = 0b1000_0000; // weight 255 (sub-block 7) gets +16
        b.extend(qh);
        let mut qs = [0u8; 128];
        qs[0] = 0x22; // weight 0: (2+16)*1 - 0.5 = 17.5; weight 32 (sub 1): 2*2 = 4
        qs[127] = 0xF0; // weight 223 (sub 6): 0; weight 255 (sub 7): (15+16)*8 - 1 = 247
        b.extend(qs);
        assert_eq!(b.len(), 176);
        let y = dequantize(GgmlType::Q5_K, &b).unwrap();
        assert_eq!((y[0], y[32], y[223], y[255]), (17.5, 4.0, 0.0, 247.0));
        assert_eq!(y[1], -0.5);
    }

    #[test]
    fn q6_k_by_hand() {
        let mut ql = [0u8; 128];
        let mut qh = [0u8; 64];
        let mut scales = [1i8; 16];
        scales[0] = 2;
        scales[15] = -3;
        // Weight 0: low 4 bits from ql[0] low nibble (5), top bits qh[0] bits 0-1 (2) -> 37 - 32 = 5.
        ql[0] = 0x05;
        qh[0] = 0b10;
        // Weight 64: low nibble of... high nibble of ql[0] (0), qh[0] bits 4-5 (0) -> -32.
        // Weight 255 (second half, l = 31, k = 3): ql[64 + 32 + 31] high nibble, qh[32 + 31] bits 6-7.
        ql[127] = 0xF0;
        qh[63] = 0b1100_0000; // 15 | 3 << 4 = 63 -> 31
        scales[0] = 2;
        let mut b = Vec::new();
        b.extend(ql);
        b.extend(qh);
        b.extend(scales.iter().map(|&s| s as u8));
        b.extend(h(0.5));
        assert_eq!(b.len(), 210);
        let y = dequantize(GgmlType::Q6_K, &b).unwrap();
        assert_eq!(y[0], 0.5 * 2.0 * 5.0);
        assert_eq!(y[64], 0.5 * 1.0 * -32.0); // scale index 4
                                              // Weight 255: half 1, l = 31 -> is = 1, k = 3 -> scale index 8 + 1 + 6 = 15.
        assert_eq!(y[255], 0.5 * -3.0 * 31.0);
    }
}
