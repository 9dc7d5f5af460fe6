//! A small builder over seccompiler's rule map, so that each process kind's
//! module reads as a list: one line per system call, with its reason.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::{Error, Mode};

/// A system call: its number and its name (for listings and errors).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sys {
    pub nr: i64,
    pub name: &'static str,
}

/// `sys!(SYS_read)`: the system call `libc::SYS_read`, named "read".
macro_rules! sys {
    ($c:ident) => {
        $crate::policy::Sys {
            nr: ::libc::$c,
            // "SYS_read" without its "SYS_".
            name: &stringify!($c)[4..],
        }
    };
}
pub(crate) use sys;

/// One comparison on a system call argument. All ours are on 32-bit values
/// (commands, request numbers, flags, signal numbers), compared as the
/// kernel reads them: the low 32 bits.
#[derive(Clone, Debug)]
pub(crate) struct Cond {
    arg: u8,
    op: SeccompCmpOp,
    value: u64,
}

/// Argument `arg` equals `value`.
pub(crate) fn arg_is(arg: u8, value: u64) -> Cond {
    Cond {
        arg,
        op: SeccompCmpOp::Eq,
        value,
    }
}

/// Argument `arg` has none of `bits` set.
pub(crate) fn arg_lacks(arg: u8, bits: u64) -> Cond {
    Cond {
        arg,
        op: SeccompCmpOp::MaskedEq(bits),
        value: 0,
    }
}

/// Argument `arg` has all of `bits` set.
pub(crate) fn arg_has(arg: u8, bits: u64) -> Cond {
    Cond {
        arg,
        op: SeccompCmpOp::MaskedEq(bits),
        value: bits,
    }
}

/// Rules for "argument `arg` is one of `values`".
pub(crate) fn arg_in(arg: u8, values: &[u64]) -> Vec<Vec<Cond>> {
    values.iter().map(|&v| vec![arg_is(arg, v)]).collect()
}

/// The allowlist of one process kind.
#[derive(Default)]
pub(crate) struct Policy {
    /// Per system call: its name and its rules (any one matching allows the
    /// call; each rule is a conjunction). No rules: always allowed.
    rules: BTreeMap<i64, (&'static str, Vec<Vec<Cond>>)>,
    /// System calls that fail with an errno without reaching the kernel
    /// proper, for a library that tries them on its own and copes with a
    /// failure (see [`Policy::refuse`]).
    refused: BTreeMap<i64, (&'static str, u32)>,
}

impl Policy {
    pub fn new() -> Self {
        Self::default()
    }

    /// Allows `sys` whatever its arguments.
    pub fn allow(&mut self, sys: Sys) -> &mut Self {
        self.insert(sys, Vec::new())
    }

    /// Allows `sys` when any one of `rules` (each a conjunction) matches.
    pub fn allow_when(&mut self, sys: Sys, rules: Vec<Vec<Cond>>) -> &mut Self {
        assert!(
            !rules.is_empty(),
            "{}: no rule would allow nothing",
            sys.name
        );
        self.insert(sys, rules)
    }

    /// Makes `sys` fail with `errno`, whatever its arguments, without the
    /// kernel carrying it out: for calls a library makes on its own and
    /// copes with failing (libslirp looking for /etc/resolv.conf). Neither
    /// allowed nor fatal; in [`Mode::Log`] too it only fails.
    pub fn refuse(&mut self, sys: Sys, errno: i32) -> &mut Self {
        assert!(
            !self.rules.contains_key(&sys.nr),
            "{} is both allowed and refused",
            sys.name
        );
        let previous = self.refused.insert(sys.nr, (sys.name, errno as u32));
        assert!(previous.is_none(), "{} is refused twice", sys.name);
        self
    }

    fn insert(&mut self, sys: Sys, rules: Vec<Vec<Cond>>) -> &mut Self {
        // A list is a static table: listing a call twice is a bug in it,
        // caught by the crate's tests, which build every list.
        assert!(
            !self.refused.contains_key(&sys.nr),
            "{} is both allowed and refused",
            sys.name
        );
        let previous = self.rules.insert(sys.nr, (sys.name, rules));
        assert!(previous.is_none(), "{} is listed twice", sys.name);
        self
    }

    /// The names of the allowed system calls, sorted by number.
    pub fn names(&self) -> Vec<&'static str> {
        self.rules.values().map(|(name, _)| *name).collect()
    }

    /// The names of the refused system calls, sorted by number.
    pub fn refused_names(&self) -> Vec<&'static str> {
        self.refused.values().map(|(name, _)| *name).collect()
    }

    /// The filter that makes the refused calls fail, if there are any: a
    /// second filter stacked on the allowlist, which lets them through to
    /// it. The kernel runs every filter and takes the strictest answer, so
    /// a refused call fails with its errno (rather than being allowed by
    /// the allowlist), and every other call gets the allowlist's answer.
    pub fn compile_refusals(&self, kind: &'static str) -> Result<Option<BpfProgram>, Error> {
        let build = |source| Error::Build { kind, source };
        let Some(&(_, errno)) = self.refused.values().next() else {
            return Ok(None);
        };
        // One filter has one answer for every call it matches.
        assert!(
            self.refused.values().all(|&(_, e)| e == errno),
            "{kind}: every refused call must fail with the same errno"
        );
        let map = self.refused.keys().map(|&nr| (nr, Vec::new())).collect();
        let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(build)?;
        let filter =
            SeccompFilter::new(map, SeccompAction::Allow, SeccompAction::Errno(errno), arch)
                .map_err(build)?;
        BpfProgram::try_from(filter).map(Some).map_err(build)
    }

    /// Compiles the list: allowed calls pass, anything else kills the
    /// process (or, in [`Mode::Log`], is logged and allowed).
    pub fn compile(&self, kind: &'static str, mode: Mode) -> Result<BpfProgram, Error> {
        let build = |source| Error::Build { kind, source };
        let mut map = BTreeMap::new();
        for (&nr, (_, rules)) in &self.rules {
            let mut compiled = Vec::with_capacity(rules.len());
            for rule in rules {
                let conds = rule
                    .iter()
                    .map(|c| {
                        SeccompCondition::new(c.arg, SeccompCmpArgLen::Dword, c.op.clone(), c.value)
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(build)?;
                compiled.push(SeccompRule::new(conds).map_err(build)?);
            }
            map.insert(nr, compiled);
        }
        // Refused calls pass this filter; the refusal filter answers them.
        for &nr in self.refused.keys() {
            map.insert(nr, Vec::new());
        }
        let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(build)?;
        let mismatch = match mode {
            Mode::Kill => SeccompAction::KillProcess,
            Mode::Log => SeccompAction::Log,
        };
        let filter =
            SeccompFilter::new(map, mismatch, SeccompAction::Allow, arch).map_err(build)?;
        BpfProgram::try_from(filter).map_err(build)
    }
}
