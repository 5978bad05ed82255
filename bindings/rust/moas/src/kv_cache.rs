use crate::error::{check, Error, Result, Status};
use crate::model::Model;
use moas_sys as sys;
use std::ptr;

/// A key/value cache for incremental decoding with [`Model::prefill`] and [`Model::decode_step`]; dropped with
/// `moas_kv_cache_destroy`.
///
/// It holds up to `capacity` positions of `batch` sequences, laid out for the architecture of the model it was
/// created from (per layer and per MoAS branch, only the kv heads that scheme has). It does **not** keep that model
/// alive and does not borrow it: it may be used with any model of the same architecture (another one is refused with
/// [`Status::SizeMismatch`]), and it may outlive the model it came from.
///
/// Like [`Model`], a cache is `Send` but not `Sync`: the C library lets one thread at a time use a model and a cache,
/// and the `&mut` receivers of [`Model::prefill`] / [`Model::decode_step`] enforce that.
///
/// ```no_run
/// use moas::{Config, KvCache, Model};
/// # fn main() -> moas::Result<()> {
/// let mut model = Model::new(&Config::new().vocab_size(64).block_size(32))?;
/// let mut cache = KvCache::new(&model, 1, 32)?;
/// let mut logits = model.prefill(&mut cache, &[1, 2, 3], 3)?; // [batch, vocab] of the last position
/// for _ in 0..8 {
///     let next = (0..logits.len()).max_by(|&a, &b| logits[a].total_cmp(&logits[b])).unwrap() as i32;
///     logits = model.decode_step(&mut cache, &[next])?;
/// }
/// assert_eq!(cache.len(), 11);
/// # Ok(()) }
/// ```
pub struct KvCache {
    handle: ptr::NonNull<sys::moas_kv_cache>,
    batch: usize,
    capacity: usize,
}

// SAFETY: a cache is plain memory owned by this handle with no thread-affine state; the C contract is that a model
// and a cache are used by one thread at a time, which `&mut KvCache` in every call that writes it guarantees.
// It is not Sync (the raw pointer keeps it from being derived), as for Model.
unsafe impl Send for KvCache {}

impl KvCache {
    /// An empty cache for `batch` sequences of up to `capacity` positions (1 <= capacity <= block_size), laid out for
    /// `model`'s architecture. Out-of-range sizes are [`Status::SizeMismatch`].
    pub fn new(model: &Model, batch: usize, capacity: usize) -> Result<KvCache> {
        let batch_c = i32::try_from(batch)
            .map_err(|_| Error::new(Status::SizeMismatch, format!("batch = {batch} does not fit in int32")))?;
        let capacity_c = i32::try_from(capacity)
            .map_err(|_| Error::new(Status::SizeMismatch, format!("capacity = {capacity} does not fit in int32")))?;
        let mut handle = ptr::null_mut();
        check(unsafe { sys::moas_kv_cache_create(model.raw(), batch_c, capacity_c, &mut handle) })?;
        let handle = ptr::NonNull::new(handle)
            .ok_or_else(|| Error::new(Status::Internal, "moas_kv_cache_create returned MOAS_OK and no cache"))?;
        Ok(KvCache { handle, batch, capacity })
    }

    pub(crate) fn raw(&mut self) -> *mut sys::moas_kv_cache {
        self.handle.as_ptr()
    }

    /// Sequences per call: tokens passed to [`Model::prefill`] are [batch, seq_len], to [`Model::decode_step`] [batch].
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// The most positions the cache can hold per sequence.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets every cached position (the memory stays allocated).
    pub fn reset(&mut self) {
        // Fails only for a NULL cache, which a KvCache never holds.
        let status = unsafe { sys::moas_kv_cache_reset(self.handle.as_ptr()) };
        debug_assert_eq!(status, sys::MOAS_OK);
    }

    /// Positions cached so far (the same for every sequence of the batch).
    pub fn len(&self) -> usize {
        let mut length = 0i32;
        // Fails only for NULL arguments, which are never passed here.
        let status = unsafe { sys::moas_kv_cache_length(self.handle.as_ptr(), &mut length) };
        debug_assert_eq!(status, sys::MOAS_OK);
        usize::try_from(length).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Positions that can still be added before [`Status::ContextFull`].
    pub fn remaining(&self) -> usize {
        self.capacity.saturating_sub(self.len())
    }

    /// Bytes of keys and values one position of one sequence occupies, summed over layers and branches: the figure
    /// to compare attention schemes by (MQA < GQA < MHA).
    pub fn bytes_per_token(&self) -> u64 {
        let mut bytes = 0u64;
        // Fails only for NULL arguments, which are never passed here.
        let status = unsafe { sys::moas_kv_cache_bytes_per_token(self.handle.as_ptr(), &mut bytes) };
        debug_assert_eq!(status, sys::MOAS_OK);
        bytes
    }

    /// What the next decode step of one sequence reads from memory at this length, as (weight bytes, cache bytes)
    /// (`moas_decode_read_bytes`): a step of B sequences reads the weights once and the cache B times, so
    /// B / (weights + B * cache) times the memory bandwidth bounds its tokens/s.
    pub fn decode_read_bytes(&self) -> (u64, u64) {
        let (mut weights, mut cache) = (0u64, 0u64);
        // Fails only for NULL arguments, which are never passed here.
        let status = unsafe { sys::moas_decode_read_bytes(self.handle.as_ptr(), &mut weights, &mut cache) };
        debug_assert_eq!(status, sys::MOAS_OK);
        (weights, cache)
    }
}

impl Drop for KvCache {
    fn drop(&mut self) {
        unsafe { sys::moas_kv_cache_destroy(self.handle.as_ptr()) }
    }
}

impl std::fmt::Debug for KvCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvCache")
            .field("batch", &self.batch)
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .field("bytes_per_token", &self.bytes_per_token())
            .finish()
    }
}
