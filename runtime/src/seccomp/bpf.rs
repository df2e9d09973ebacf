//! The few classic BPF instructions a seccomp filter needs, and (for tests) an interpreter
//! that runs a filter over a synthetic `seccomp_data` as the kernel would.

/// One classic BPF instruction (`struct sock_filter`).
pub type Insn = libc::sock_filter;

const LD_W_ABS: u16 = 0x20; // BPF_LD (0) | BPF_W (0) | BPF_ABS
const JMP_JA: u16 = 0x05; // BPF_JMP | BPF_JA
const JMP_JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K (0)
const JMP_JSET_K: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K (0)
const RET_K: u16 = 0x06; // BPF_RET | BPF_K

/// Offsets into `struct seccomp_data`.
pub const OFF_NR: u32 = 0;
pub const OFF_ARCH: u32 = 4;
/// The low 32 bits of argument `i` (both hosts are little-endian).
pub const fn off_arg_lo(i: u32) -> u32 {
    16 + 8 * i
}

/// `A = seccomp_data[off]` (a 32-bit word).
pub fn load(off: u32) -> Insn {
    Insn {
        code: LD_W_ABS,
        jt: 0,
        jf: 0,
        k: off,
    }
}

/// `if A == k` skip `jt` instructions, else skip `jf`.
pub fn jeq(k: u32, jt: u8, jf: u8) -> Insn {
    Insn {
        code: JMP_JEQ_K,
        jt,
        jf,
        k,
    }
}

/// `if A & k != 0` skip `jt` instructions, else skip `jf`.
pub fn jset(k: u32, jt: u8, jf: u8) -> Insn {
    Insn {
        code: JMP_JSET_K,
        jt,
        jf,
        k,
    }
}

/// Skip `k` instructions unconditionally (the only jump that reaches past 255).
pub fn ja(k: u32) -> Insn {
    Insn {
        code: JMP_JA,
        jt: 0,
        jf: 0,
        k,
    }
}

/// Return the seccomp action `k`.
pub fn ret(k: u32) -> Insn {
    Insn {
        code: RET_K,
        jt: 0,
        jf: 0,
        k,
    }
}

/// What a filter sees of a system call.
#[cfg(test)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Data {
    pub nr: i32,
    pub arch: u32,
    pub args: [u64; 6],
}

/// Runs `prog` over `data` as the kernel's classic BPF interpreter does for the few
/// instructions above; panics on anything else or on a jump out of the program.
#[cfg(test)]
pub fn run(prog: &[Insn], data: &Data) -> u32 {
    let word = |off: u32| -> u32 {
        match off {
            OFF_NR => data.nr as u32,
            OFF_ARCH => data.arch,
            8 | 12 => 0,
            o if (16..64).contains(&o) && o % 4 == 0 => {
                let arg = data.args[((o - 16) / 8) as usize];
                if (o - 16) % 8 == 0 {
                    arg as u32
                } else {
                    (arg >> 32) as u32
                }
            }
            o => panic!("load from bad offset {o}"),
        }
    };
    let (mut pc, mut a) = (0usize, 0u32);
    loop {
        let i = prog
            .get(pc)
            .unwrap_or_else(|| panic!("ran off the end at {pc}"));
        pc += 1;
        match i.code {
            LD_W_ABS => a = word(i.k),
            JMP_JA => pc += i.k as usize,
            JMP_JEQ_K => pc += usize::from(if a == i.k { i.jt } else { i.jf }),
            JMP_JSET_K => pc += usize::from(if a & i.k != 0 { i.jt } else { i.jf }),
            RET_K => return i.k,
            c => panic!("unknown instruction {c:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interpreter_follows_jumps() {
        let prog = [
            load(OFF_NR),
            jeq(7, 0, 1),
            ret(1),
            jset(0x10, 1, 0),
            ja(1),
            ret(2),
            ret(3),
        ];
        let at = |nr| {
            run(
                &prog,
                &Data {
                    nr,
                    ..Data::default()
                },
            )
        };
        assert_eq!(at(7), 1);
        assert_eq!(at(0x10), 2);
        assert_eq!(at(0), 3);
    }
}
