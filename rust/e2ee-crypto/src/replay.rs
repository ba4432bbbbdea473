//! A sliding replay window over CTR values, in the manner of RFC 3711 §3.3.2 and
//! Appendix A (SRTP): the highest CTR accepted so far, and a bitmap of which of the
//! `width` values at or below it were accepted.
//!
//! The window is only updated after a frame authenticated (RFC 3711 §3.3.2: "the
//! replay list is updated only after the packet is authenticated"), so a forger cannot
//! push it forward.

/// Widest window supported: one bit per CTR in a `u128`.
pub const MAX_WIDTH: u32 = 128;

#[derive(Debug, Clone)]
pub struct ReplayWindow {
    width: u32,
    /// Highest CTR accepted, or `None` before the first frame.
    top: Option<u64>,
    /// Bit `i` set: CTR `top - i` was accepted.
    seen: u128,
}

impl ReplayWindow {
    /// Refuses a width the window cannot hold.
    pub fn check_width(width: u32) -> Result<(), crate::Error> {
        if width > MAX_WIDTH {
            return Err(crate::Error::InvalidArgument(format!(
                "replay window of {width} is wider than {MAX_WIDTH}"
            )));
        }
        Ok(())
    }

    /// A window of `width` counters (1 to 128); 0 disables replay protection.
    pub fn new(width: u32) -> Self {
        ReplayWindow {
            width: width.min(MAX_WIDTH),
            top: None,
            seen: 0,
        }
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    /// The highest CTR accepted so far.
    pub fn top(&self) -> Option<u64> {
        self.top
    }

    /// A window that treats every CTR up to `top` as already seen: for a KID whose
    /// bitmap was lost (its key evicted), only CTRs above its old top are surely new.
    pub fn resume(width: u32, top: u64) -> Self {
        let mut w = Self::new(width);
        if w.width > 0 {
            w.top = Some(top);
            w.seen = u128::MAX;
        }
        w
    }

    /// Would `ctr` be accepted?  Does not change the window.
    pub fn check(&self, ctr: u64) -> bool {
        if self.width == 0 {
            return true;
        }
        let Some(top) = self.top else { return true };
        if ctr > top {
            return true;
        }
        let age = top - ctr;
        age < u64::from(self.width) && self.seen & (1u128 << age) == 0
    }

    /// Records `ctr` as accepted.  Call only after [`check`](Self::check) and
    /// authentication both succeeded.
    pub fn accept(&mut self, ctr: u64) {
        if self.width == 0 {
            return;
        }
        match self.top {
            Some(top) if ctr <= top => {
                let age = top - ctr;
                if age < u64::from(self.width) {
                    self.seen |= 1u128 << age;
                }
            }
            Some(top) => {
                let shift = ctr - top;
                self.seen = if shift >= 128 { 0 } else { self.seen << shift };
                self.seen |= 1;
                self.top = Some(ctr);
            }
            None => {
                self.seen = 1;
                self.top = Some(ctr);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_and_repeats() {
        let mut w = ReplayWindow::new(128);
        for ctr in 0..300 {
            assert!(w.check(ctr));
            w.accept(ctr);
            assert!(!w.check(ctr));
        }
    }

    #[test]
    fn reordering_within_the_window_is_accepted_once() {
        let mut w = ReplayWindow::new(128);
        w.accept(1000);
        assert!(w.check(1000 - 127));
        assert!(!w.check(1000 - 128), "older than the window");
        w.accept(990);
        assert!(!w.check(990));
        assert!(w.check(991));
        // A jump far ahead clears the bitmap but keeps the rule.
        w.accept(u64::MAX);
        assert!(!w.check(u64::MAX));
        assert!(!w.check(1000));
        assert!(w.check(u64::MAX - 1));
    }

    #[test]
    fn a_resumed_window_refuses_everything_up_to_its_top() {
        let mut w = ReplayWindow::resume(128, 1000);
        assert!(!w.check(1000) && !w.check(999) && !w.check(0));
        w.accept(1010);
        assert!(!w.check(1000) && !w.check(5), "the old range stays refused");
        assert!(
            w.check(1005),
            "CTRs between the old top and the new one are new"
        );
    }

    #[test]
    fn zero_width_disables() {
        let mut w = ReplayWindow::new(0);
        w.accept(5);
        assert!(w.check(5));
    }
}
