//! A slab indexed by a key newtype instead of a bare `usize`, so that a connection slab takes
//! only connection keys and a link slab only link ids: the compiler then refuses one for the
//! other. The raw index appears only here, where the key meets the slab.

use std::marker::PhantomData;
use std::ops::{Index, IndexMut};

use slab::Slab;

/// A key that names a slot of a [`KeyedSlab`]: a newtype over the slot's index.
pub trait SlabKey: Copy {
    /// The key of slot `index`.
    fn from_index(index: usize) -> Self;
    /// The slot this key names.
    fn index(self) -> usize;
}

/// A [`Slab`] whose slots are named by keys of type `K`.
#[derive(Debug)]
pub struct KeyedSlab<K, V> {
    slab: Slab<V>,
    key: PhantomData<fn() -> K>,
}

impl<K, V> Default for KeyedSlab<K, V> {
    fn default() -> Self {
        Self { slab: Slab::new(), key: PhantomData }
    }
}

impl<K: SlabKey, V> KeyedSlab<K, V> {
    /// An empty slab.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `value` and returns its key.
    pub fn insert(&mut self, value: V) -> K {
        K::from_index(self.slab.insert(value))
    }

    /// The value under `key`, if any.
    #[inline]
    pub fn get(&self, key: K) -> Option<&V> {
        self.slab.get(key.index())
    }

    /// The value under `key`, if any, to change.
    #[inline]
    pub fn get_mut(&mut self, key: K) -> Option<&mut V> {
        self.slab.get_mut(key.index())
    }

    /// Takes the value under `key` out, if any; its key may then be handed out again.
    pub fn try_remove(&mut self, key: K) -> Option<V> {
        self.slab.try_remove(key.index())
    }

    /// True when `key` names a value.
    pub fn contains(&self, key: K) -> bool {
        self.slab.contains(key.index())
    }

    /// How many values the slab holds.
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    /// True when the slab holds nothing.
    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    /// Every value with its key, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (K, &V)> {
        self.slab.iter().map(|(index, value)| (K::from_index(index), value))
    }

    /// Every value with its key, in key order, to change.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (K, &mut V)> {
        self.slab.iter_mut().map(|(index, value)| (K::from_index(index), value))
    }
}

impl<K: SlabKey, V> Index<K> for KeyedSlab<K, V> {
    type Output = V;

    /// Panics when `key` names no value: the caller holds only keys it was given (a programmer
    /// error otherwise, as with [`Slab`]).
    #[inline]
    fn index(&self, key: K) -> &V {
        &self.slab[key.index()]
    }
}

impl<K: SlabKey, V> IndexMut<K> for KeyedSlab<K, V> {
    #[inline]
    fn index_mut(&mut self, key: K) -> &mut V {
        &mut self.slab[key.index()]
    }
}
