// LD_PRELOAD shim: the process's CPUID reports an AVX2-only CPU (no AVX-512 of any kind, no AVX-VNNI, no GFNI), as
// a Zen 3 does, so every library that picks kernels by CPUID (onnxruntime's MLAS, fbgemm, faiss, OpenBLAS) runs its
// AVX2 ones. Linux's CPUID faulting (arch_prctl ARCH_SET_CPUID, CPU flag cpuid_fault) makes each CPUID instruction
// raise SIGSEGV; the handler runs the real one, clears the bits and steps over it. Built and loaded by avx2_only.sh.
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <dlfcn.h>
#include <stdlib.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

typedef int (*sigaction_fn)(int, const struct sigaction *, struct sigaction *);

// The handler the program itself installs for SIGSEGV: faults that are not CPUID go to it.
static struct sigaction program_handler = {.sa_handler = SIG_DFL};

static void real_cpuid(uint32_t leaf, uint32_t subleaf, uint32_t regs[4]) {
    __asm__ volatile("cpuid" : "=a"(regs[0]), "=b"(regs[1]), "=c"(regs[2]), "=d"(regs[3]) : "a"(leaf), "c"(subleaf));
}

static void as_avx2_only(uint32_t leaf, uint32_t subleaf, uint32_t regs[4]) {
    if (leaf == 7 && subleaf == 0) {
        // EBX: avx512 f, dq, ifma, pf, er, cd, bw, vl
        regs[1] &= ~((1u << 16) | (1u << 17) | (1u << 21) | (1u << 26) | (1u << 27) | (1u << 28) | (1u << 30) |
                     (1u << 31));
        // ECX: avx512_vbmi, avx512_vbmi2, gfni, avx512_vnni, avx512_bitalg, avx512_vpopcntdq
        regs[2] &= ~((1u << 1) | (1u << 6) | (1u << 8) | (1u << 11) | (1u << 12) | (1u << 14));
        // EDX: avx512_4vnniw, avx512_4fmaps, avx512_vp2intersect, amx_bf16, avx512_fp16, amx_tile, amx_int8
        regs[3] &= ~((1u << 2) | (1u << 3) | (1u << 8) | (1u << 22) | (1u << 23) | (1u << 24) | (1u << 25));
    } else if (leaf == 7 && subleaf == 1) {
        regs[0] &= ~((1u << 4) | (1u << 5) | (1u << 21) | (1u << 23));  // avx_vnni, avx512_bf16, amx_fp16, avx_ifma
        // EDX: avx_vnni_int8, avx_ne_convert, amx_complex, avx_vnni_int16, avx10
        regs[3] &= ~((1u << 4) | (1u << 5) | (1u << 8) | (1u << 10) | (1u << 19));
    } else if (leaf == 0x24) {
        regs[0] = regs[1] = regs[2] = regs[3] = 0;  // AVX10's own leaf
    } else if (leaf == 0xd && subleaf == 0) {
        regs[0] &= ~((1u << 5) | (1u << 6) | (1u << 7));  // AVX-512 register state (opmask, ZMM)
    }
}

static sigaction_fn next_sigaction(void) {
    static sigaction_fn next;
    if (!next) next = (sigaction_fn)dlsym(RTLD_NEXT, "sigaction");
    return next;
}

static void forward(int sig, siginfo_t *info, void *context) {
    if (program_handler.sa_flags & SA_SIGINFO) {
        program_handler.sa_sigaction(sig, info, context);
    } else if (program_handler.sa_handler != SIG_IGN && program_handler.sa_handler != SIG_DFL) {
        program_handler.sa_handler(sig);
    } else if (info->si_code <= 0) {  // sent by a process (kill), not a fault: do what the program asked for
        if (program_handler.sa_handler == SIG_DFL) {
            struct sigaction fallback = {.sa_handler = SIG_DFL};
            next_sigaction()(sig, &fallback, NULL);
            raise(sig);
        }
    } else {
        // returning re-runs the faulting instruction, which now ends the process as usual
        struct sigaction fallback = {.sa_handler = SIG_DFL};
        next_sigaction()(sig, &fallback, NULL);
    }
}

static void fail(const char *message) {
    write(2, message, strlen(message));
    abort();
}

static void on_segv(int sig, siginfo_t *info, void *context) {
    greg_t *regs = ((ucontext_t *)context)->uc_mcontext.gregs;
    const uint8_t *ip = (const uint8_t *)regs[REG_RIP];
    if (info->si_code != SI_KERNEL || ip[0] != 0x0f || ip[1] != 0xa2) {
        forward(sig, info, context);
        return;
    }
    uint32_t leaf = (uint32_t)regs[REG_RAX], subleaf = (uint32_t)regs[REG_RCX], out[4];
    if (syscall(SYS_arch_prctl, ARCH_SET_CPUID, 1) != 0) fail("avx2_cpuid: cannot run CPUID\n");
    real_cpuid(leaf, subleaf, out);
    if (syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0) != 0) fail("avx2_cpuid: cannot fault on CPUID again\n");
    as_avx2_only(leaf, subleaf, out);
    regs[REG_RAX] = out[0];
    regs[REG_RBX] = out[1];
    regs[REG_RCX] = out[2];
    regs[REG_RDX] = out[3];
    regs[REG_RIP] += 2;
}

// The program's own SIGSEGV handler is kept as the one faults other than CPUID go to; ours stays installed.
int sigaction(int sig, const struct sigaction *action, struct sigaction *old) {
    if (sig != SIGSEGV) return next_sigaction()(sig, action, old);
    if (old) *old = program_handler;
    if (action) program_handler = *action;
    return 0;
}

typedef int (*sigmask_fn)(int, const sigset_t *, sigset_t *);

// SIGSEGV must stay deliverable: a thread that blocked it and ran CPUID would be killed by the kernel.
static int unblocking_segv(sigmask_fn next, int how, const sigset_t *set, sigset_t *old) {
    if (set == NULL || how == SIG_UNBLOCK) return next(how, set, old);
    sigset_t kept = *set;
    sigdelset(&kept, SIGSEGV);
    return next(how, &kept, old);
}

int pthread_sigmask(int how, const sigset_t *set, sigset_t *old) {
    static sigmask_fn next;
    if (!next) next = (sigmask_fn)dlsym(RTLD_NEXT, "pthread_sigmask");
    return unblocking_segv(next, how, set, old);
}

int sigprocmask(int how, const sigset_t *set, sigset_t *old) {
    static sigmask_fn next;
    if (!next) next = (sigmask_fn)dlsym(RTLD_NEXT, "sigprocmask");
    return unblocking_segv(next, how, set, old);
}

sighandler_t signal(int sig, sighandler_t handler) {
    if (sig != SIGSEGV) {
        struct sigaction action = {.sa_handler = handler, .sa_flags = SA_RESTART}, old;
        sigemptyset(&action.sa_mask);
        return next_sigaction()(sig, &action, &old) == 0 ? old.sa_handler : SIG_ERR;
    }
    sighandler_t previous = program_handler.sa_handler;
    memset(&program_handler, 0, sizeof program_handler);
    program_handler.sa_handler = handler;
    return previous;
}

__attribute__((constructor)) static void fault_on_cpuid(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_segv;
    action.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
    next_sigaction()(SIGSEGV, &action, NULL);
    // POLYMODAL_CPUID_MASKED tells polymodal.hardware that the masking took effect in this process.
    if (syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0) != 0) {
        perror("avx2_cpuid: arch_prctl(ARCH_SET_CPUID, 0)");
        unsetenv("POLYMODAL_CPUID_MASKED");
    } else {
        setenv("POLYMODAL_CPUID_MASKED", "avx2", 1);
    }
}
