//! One bounded "seen" set for everything that must remember what it already did without
//! growing forever: transitions reported, (plan, event, sink) deliveries claimed. Insertion
//! order is kept; past the capacity the oldest entry is forgotten (the callers say what a
//! forgotten entry costs them: at worst one duplicate). Pure.

use std::collections::{HashSet, VecDeque};
use std::hash::Hash;

#[derive(Debug)]
pub struct BoundedSet<K> {
    capacity: usize,
    order: VecDeque<K>,
    seen: HashSet<K>,
}

impl<K: Hash + Eq + Clone> BoundedSet<K> {
    pub fn new(capacity: usize) -> Self {
        Self { capacity: capacity.max(1), order: VecDeque::new(), seen: HashSet::new() }
    }

    /// True the first time `key` is inserted (while it is remembered).
    pub fn insert(&mut self, key: K) -> bool {
        if self.seen.contains(&key) {
            return false;
        }
        if self.order.len() >= self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        self.seen.insert(key.clone());
        self.order.push_back(key);
        true
    }

    /// Forget `key`, so that the next insert of it is a first time again.
    pub fn remove(&mut self, key: &K) {
        if self.seen.remove(key) {
            self.order.retain(|k| k != key);
        }
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_once_forgets_the_oldest_past_capacity_and_on_remove() {
        let mut set = BoundedSet::new(2);
        assert!(set.insert("a"));
        assert!(!set.insert("a"), "seen");
        assert!(set.insert("b"));
        assert!(set.insert("c"), "over capacity: a is forgotten");
        assert_eq!(set.len(), 2);
        assert!(set.insert("a"), "a was forgotten");
        assert!(!set.insert("c"));
        set.remove(&"c");
        assert!(set.insert("c"), "removed: a first time again");
        set.remove(&"zzz");
        assert_eq!(set.len(), 2);
    }
}
