/*
 * probe: the attacker of the escape battery (tests/escape/main.rs).
 *
 *   probe HOST_MNT_NS HOST_UTS_NS ATTACK [ARGS...]
 *
 * It runs INSIDE hermetic-sandbox. Before anything else it proves that it is
 * sandboxed: the inode numbers of its mount and uts namespaces must both
 * differ from the host values the test passed. Otherwise it prints
 * "REFUSED: not in a sandbox" and exits 99, so that a broken sandbox (or a
 * mistaken invocation) can never turn an attack against the host.
 *
 * Each attempt prints one JSON line on stdout:
 *   {"attack":"unshare_user","ok":false,"errno":1,"errname":"EPERM"}
 * with extra fields for attacks that measure something. The probe exits 0
 * after its attempts; the test asserts the exact outcomes.
 *
 * Called as `print-euid` (the harness installs a setuid-root copy of this
 * binary under that name in the image) it only prints its ids.
 *
 * Every attempt is written to be harmless even where it succeeds: bogus
 * magic numbers for reboot, invalid flags for kexec_load, NULL images for
 * module loading, the current time for clock_settime, "localhost" for
 * sethostname. Outside addresses are only tried when the network namespace
 * differs from the host's and holds nothing but `lo`.
 *
 * Built by the harness: cc -static -O1 -o probe probe.c (x86_64 and the
 * generic syscall table; syscall numbers newer than the libc headers are
 * defined below).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/time.h>
#include <sys/timex.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#ifndef SYS_io_uring_setup
#define SYS_io_uring_setup 425
#endif
#ifndef SYS_io_uring_enter
#define SYS_io_uring_enter 426
#endif
#ifndef SYS_io_uring_register
#define SYS_io_uring_register 427
#endif
#ifndef SYS_open_tree
#define SYS_open_tree 428
#endif
#ifndef SYS_move_mount
#define SYS_move_mount 429
#endif
#ifndef SYS_fsopen
#define SYS_fsopen 430
#endif
#ifndef SYS_fsconfig
#define SYS_fsconfig 431
#endif
#ifndef SYS_fsmount
#define SYS_fsmount 432
#endif
#ifndef SYS_fspick
#define SYS_fspick 433
#endif
#ifndef SYS_clone3
#define SYS_clone3 435
#endif
#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif
#ifndef SYS_fchmodat2
#define SYS_fchmodat2 452
#endif
#ifndef SYS_setxattrat
#define SYS_setxattrat 463
#endif
#ifndef SYS_open_tree_attr
#define SYS_open_tree_attr 467
#endif

#define P_OPEN_TREE_CLONE 1
#define P_AT_RECURSIVE 0x8000
#define P_FSCONFIG_SET_STRING 1
#define P_KEY_SPEC_SESSION_KEYRING (-3)
#define P_KEY_SPEC_PROCESS_KEYRING (-2)
#define P_KEYCTL_GET_KEYRING_ID 0
#define P_KEYCTL_JOIN_SESSION_KEYRING 1
#define P_TIOCL_GETSHIFTSTATE 6

/* ------------------------------------------------------------------ */
/* Output: one JSON object per line, written with write(2) so that     */
/* nothing stays buffered across fork.                                 */
/* ------------------------------------------------------------------ */

static char line[16384];
static size_t line_len;

static void add(const char *s) {
    size_t n = strlen(s);
    if (line_len + n >= sizeof line - 4) n = sizeof line - 4 - line_len;
    memcpy(line + line_len, s, n);
    line_len += n;
}

static void addf(const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    add(buf);
}

static void add_escaped(const char *s) {
    add("\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            char b[3] = {'\\', (char)c, 0};
            add(b);
        } else if (c < 0x20 || c >= 0x7f) {
            addf("\\u%04x", c);
        } else {
            char b[2] = {(char)c, 0};
            add(b);
        }
    }
    add("\"");
}

static void write_all(int fd, const char *buf, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, buf, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return;
        buf += w;
        n -= (size_t)w;
    }
}

static void j_begin(const char *attack) {
    line_len = 0;
    add("{\"attack\":");
    add_escaped(attack);
}
static void j_bool(const char *k, int v) { addf(",\"%s\":%s", k, v ? "true" : "false"); }
static void j_int(const char *k, long long v) { addf(",\"%s\":%lld", k, v); }
static void j_str(const char *k, const char *v) {
    addf(",\"%s\":", k);
    add_escaped(v);
}
static void j_end(void) {
    add("}\n");
    write_all(1, line, line_len);
}

static const char *errname(int e) {
    switch (e) {
    case 0: return "OK";
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case ESRCH: return "ESRCH";
    case EINTR: return "EINTR";
    case EIO: return "EIO";
    case ENXIO: return "ENXIO";
    case E2BIG: return "E2BIG";
    case ENOEXEC: return "ENOEXEC";
    case EBADF: return "EBADF";
    case ECHILD: return "ECHILD";
    case EAGAIN: return "EAGAIN";
    case ENOMEM: return "ENOMEM";
    case EACCES: return "EACCES";
    case EFAULT: return "EFAULT";
    case EBUSY: return "EBUSY";
    case EEXIST: return "EEXIST";
    case EXDEV: return "EXDEV";
    case ENODEV: return "ENODEV";
    case ENOTDIR: return "ENOTDIR";
    case EISDIR: return "EISDIR";
    case EINVAL: return "EINVAL";
    case ENFILE: return "ENFILE";
    case EMFILE: return "EMFILE";
    case ENOTTY: return "ENOTTY";
    case ETXTBSY: return "ETXTBSY";
    case EFBIG: return "EFBIG";
    case ENOSPC: return "ENOSPC";
    case ESPIPE: return "ESPIPE";
    case EROFS: return "EROFS";
    case EMLINK: return "EMLINK";
    case EPIPE: return "EPIPE";
    case ERANGE: return "ERANGE";
    case ENAMETOOLONG: return "ENAMETOOLONG";
    case ENOSYS: return "ENOSYS";
    case ELOOP: return "ELOOP";
    case ENODATA: return "ENODATA";
    case EOVERFLOW: return "EOVERFLOW";
    case ENOTSOCK: return "ENOTSOCK";
    case EDESTADDRREQ: return "EDESTADDRREQ";
    case EPROTONOSUPPORT: return "EPROTONOSUPPORT";
    case EOPNOTSUPP: return "ENOTSUP";
    case EAFNOSUPPORT: return "EAFNOSUPPORT";
    case EADDRINUSE: return "EADDRINUSE";
    case EADDRNOTAVAIL: return "EADDRNOTAVAIL";
    case ENETDOWN: return "ENETDOWN";
    case ENETUNREACH: return "ENETUNREACH";
    case ECONNRESET: return "ECONNRESET";
    case EISCONN: return "EISCONN";
    case ENOTCONN: return "ENOTCONN";
    case ETIMEDOUT: return "ETIMEDOUT";
    case ECONNREFUSED: return "ECONNREFUSED";
    case EHOSTUNREACH: return "EHOSTUNREACH";
    case EALREADY: return "EALREADY";
    case EINPROGRESS: return "EINPROGRESS";
    case EKEYREJECTED: return "EKEYREJECTED";
    case ENOKEY: return "ENOKEY";
    default: return "E?";
    }
}

/* One attempt: ok when ret >= 0, else errno e. */
static void report(const char *attack, long ret, int e) {
    j_begin(attack);
    j_bool("ok", ret >= 0);
    j_int("errno", ret >= 0 ? 0 : e);
    j_str("errname", errname(ret >= 0 ? 0 : e));
    j_end();
}

/* Evaluates EXPR once, captures errno at once, reports. */
#define TRY(name, expr)                                                                            \
    do {                                                                                           \
        errno = 0;                                                                                 \
        long try_r_ = (long)(expr);                                                                \
        int try_e_ = errno;                                                                        \
        report((name), try_r_, try_e_);                                                            \
    } while (0)

/* Like TRY for calls returning an fd, which is closed on success. */
#define TRY_FD(name, expr)                                                                         \
    do {                                                                                           \
        errno = 0;                                                                                 \
        long try_r_ = (long)(expr);                                                                \
        int try_e_ = errno;                                                                        \
        report((name), try_r_, try_e_);                                                            \
        if (try_r_ >= 0) close((int)try_r_);                                                       \
    } while (0)

/* Runs fn in a forked child so that a success (a new namespace, a joined
 * one) cannot change the probe itself. The child reports. */
static void in_child(void (*fn)(const char *), const char *arg) {
    pid_t p = fork();
    if (p < 0) {
        report("fork", -1, errno);
        return;
    }
    if (p == 0) {
        fn(arg);
        _exit(0);
    }
    int st;
    while (waitpid(p, &st, 0) < 0 && errno == EINTR) {
    }
}

static void sleep_seconds(long s) {
    struct timespec ts = {s, 0};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

static unsigned long long ns_inode(const char *name) {
    char path[64];
    struct stat st;
    snprintf(path, sizeof path, "/proc/self/ns/%s", name);
    if (stat(path, &st) < 0) return 0;
    return (unsigned long long)st.st_ino;
}

/* A sleeping child for ptrace/process_vm attempts; dies with the probe. */
static pid_t sleeping_child(void) {
    pid_t p = fork();
    if (p == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        sleep_seconds(3600);
        _exit(0);
    }
    return p;
}

static void reap(pid_t p) {
    if (p <= 0) return;
    kill(p, SIGKILL);
    while (waitpid(p, NULL, 0) < 0 && errno == EINTR) {
    }
}

/* ------------------------------------------------------------------ */
/* 1, 2. Network                                                        */
/* ------------------------------------------------------------------ */

static int connect_in(int type, const char *ip, int port, const char *payload) {
    int s = socket(AF_INET, type | SOCK_CLOEXEC, 0);
    if (s < 0) return -1;
    struct timeval tv = {2, 0};
    setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, ip, &a.sin_addr);
    int r = connect(s, (struct sockaddr *)&a, sizeof a);
    if (r == 0 && payload) r = (int)send(s, payload, strlen(payload), 0) < 0 ? -1 : 0;
    int e = errno;
    close(s);
    errno = e;
    return r;
}

static int abstract_connect(int type, const char *name, const char *payload) {
    int s = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
    if (s < 0) return -1;
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    size_t n = strlen(name);
    if (n > sizeof a.sun_path - 1) n = sizeof a.sun_path - 1;
    memcpy(a.sun_path + 1, name, n);
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
    int r;
    if (type == SOCK_DGRAM)
        r = (int)sendto(s, payload, strlen(payload), 0, (struct sockaddr *)&a, len) < 0 ? -1 : 0;
    else
        r = connect(s, (struct sockaddr *)&a, len);
    int e = errno;
    close(s);
    errno = e;
    return r;
}

/* Interface names from /proc/net/dev; returns how many are not `lo`. */
static int report_interfaces(void) {
    FILE *f = fopen("/proc/net/dev", "re");
    char buf[512], names[1024] = "";
    int others = 0, count = 0;
    if (!f) {
        report("net_interfaces", -1, errno);
        return 1;
    }
    while (fgets(buf, sizeof buf, f)) {
        char *colon = strchr(buf, ':');
        if (!colon) continue;
        *colon = 0;
        char *n = buf;
        while (*n == ' ') n++;
        if (strcmp(n, "lo") != 0) others++;
        if (count++) strncat(names, ",", sizeof names - strlen(names) - 1);
        strncat(names, n, sizeof names - strlen(names) - 1);
    }
    fclose(f);
    int up = 0;
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, "lo");
    if (s >= 0 && ioctl(s, SIOCGIFFLAGS, &ifr) == 0) up = (ifr.ifr_flags & IFF_UP) != 0;
    if (s >= 0) close(s);
    j_begin("net_interfaces");
    j_bool("ok", 1);
    j_str("names", names);
    j_bool("lo_up", up);
    j_end();
    return others;
}

/* net HOST_NET_NS TCP_PORT UDP_PORT ABSTRACT_NAME TOKEN */
static void attack_net(int argc, char **argv) {
    if (argc < 5) {
        report("usage", -1, EINVAL);
        return;
    }
    unsigned long long host_net = strtoull(argv[0], NULL, 10);
    int tcp_port = atoi(argv[1]), udp_port = atoi(argv[2]);
    const char *abstract_name = argv[3], *token = argv[4];
    int others = report_interfaces();
    unsigned long long my_net = ns_inode("net");
    int isolated = my_net != 0 && my_net != host_net && others == 0;

    TRY("tcp_host", connect_in(SOCK_STREAM, "127.0.0.1", tcp_port, token));
    TRY("udp_host", connect_in(SOCK_DGRAM, "127.0.0.1", udp_port, token));
    if (isolated) {
        TRY("tcp_outside", connect_in(SOCK_STREAM, "192.0.2.1", 80, NULL));
        TRY("udp_outside", connect_in(SOCK_DGRAM, "192.0.2.1", 80, token));
    } else {
        /* Never send anything towards an outside address from a network
         * namespace that might be the host's. */
        report("tcp_outside", -1, EALREADY);
        report("udp_outside", -1, EALREADY);
    }
    TRY("abstract_stream", abstract_connect(SOCK_STREAM, abstract_name, token));
    TRY("abstract_dgram", abstract_connect(SOCK_DGRAM, abstract_name, token));

    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(0)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    TRY("tcp_bind_lo", bind(s, (struct sockaddr *)&a, sizeof a));
    close(s);
}

/* ------------------------------------------------------------------ */
/* 3. Namespaces                                                        */
/* ------------------------------------------------------------------ */

struct clone_args_v2 {
    uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls;
};

static void child_unshare(const char *which) {
    static const struct { const char *n; int f; } t[] = {
        {"user", CLONE_NEWUSER}, {"mnt", CLONE_NEWNS},   {"net", CLONE_NEWNET},
        {"pid", CLONE_NEWPID},   {"uts", CLONE_NEWUTS},  {"ipc", CLONE_NEWIPC},
        {"cgroup", CLONE_NEWCGROUP}, {"time", 0x80 /* CLONE_NEWTIME */},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        if (strcmp(t[i].n, which) != 0) continue;
        char name[32];
        snprintf(name, sizeof name, "unshare_%s", which);
        TRY(name, unshare(t[i].f));
    }
}

static void child_setns(const char *path) {
    char name[64];
    const char *base = strrchr(path, '/') + 1;
    snprintf(name, sizeof name, "setns_%s%s", strncmp(path, "/proc/1/", 8) == 0 ? "pid1_" : "", base);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        report(name, -1, errno);
        return;
    }
    TRY(name, setns(fd, 0));
    close(fd);
}

static void child_clone3(const char *which) {
    struct clone_args_v2 ca;
    memset(&ca, 0, sizeof ca);
    ca.exit_signal = SIGCHLD;
    if (strcmp(which, "newuser") == 0) ca.flags = CLONE_NEWUSER;
    if (strcmp(which, "newns") == 0) ca.flags = CLONE_NEWNS;
    char name[32];
    snprintf(name, sizeof name, "clone3_%s", which);
    errno = 0;
    long r = syscall(SYS_clone3, &ca, sizeof ca);
    if (r == 0) _exit(0);
    int e = errno;
    if (r > 0) waitpid((pid_t)r, NULL, 0);
    report(name, r, e);
}

static void child_clone(const char *which) {
    unsigned long flags = SIGCHLD | (strcmp(which, "newuser") == 0 ? CLONE_NEWUSER : CLONE_NEWNS);
    char name[32];
    snprintf(name, sizeof name, "clone_%s", which);
    errno = 0;
    long r = syscall(SYS_clone, flags, 0, 0, 0, 0);
    if (r == 0) _exit(0);
    int e = errno;
    if (r > 0) waitpid((pid_t)r, NULL, 0);
    report(name, r, e);
}

/* unshare(CLONE_NEWUSER) through the other syscall ABIs of x86_64: a filter
 * that does not check the architecture (i386 numbers mean other calls) or
 * the x32 bit would let these through. Run in a child, which a filter may
 * kill with SIGSYS: then the line carries the signal instead of an errno. */
static void child_abi(const char *which) {
    long r = -1;
    int e = 0;
#if defined(__x86_64__)
    if (strcmp(which, "x32") == 0) {
        errno = 0;
        r = syscall(0x40000000L | SYS_unshare, CLONE_NEWUSER);
        e = errno;
    } else {
        long ret;
        /* i386 unshare is 310 */
        __asm__ volatile("int $0x80" : "=a"(ret) : "a"(310L), "b"((long)CLONE_NEWUSER) : "memory");
        if (ret < 0 && ret > -4096) {
            e = (int)-ret;
            r = -1;
        } else {
            r = ret;
        }
    }
#else
    e = ENOSYS;
#endif
    char name[32];
    snprintf(name, sizeof name, "%s_unshare_user", which);
    report(name, r, e);
}

static void abi_in_child(const char *which) {
    pid_t p = fork();
    if (p == 0) {
        child_abi(which);
        _exit(0);
    }
    int st = 0;
    while (p > 0 && waitpid(p, &st, 0) < 0 && errno == EINTR) {
    }
    if (p > 0 && WIFSIGNALED(st)) {
        char name[32];
        snprintf(name, sizeof name, "%s_unshare_user", which);
        j_begin(name);
        j_bool("ok", 0);
        j_int("errno", 0);
        j_int("signal", WTERMSIG(st));
        j_end();
    }
}

static void attack_namespaces(void) {
    const char *kinds[] = {"user", "mnt", "net", "pid", "uts", "ipc", "cgroup", "time"};
    for (size_t i = 0; i < 8; i++) in_child(child_unshare, kinds[i]);
    const char *ns[] = {"/proc/self/ns/user", "/proc/self/ns/mnt", "/proc/self/ns/net",
                        "/proc/self/ns/pid", "/proc/self/ns/uts", "/proc/self/ns/ipc",
                        "/proc/self/ns/cgroup", "/proc/1/ns/mnt", "/proc/1/ns/user"};
    for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) in_child(child_setns, ns[i]);
    in_child(child_clone3, "newuser");
    in_child(child_clone3, "newns");
    in_child(child_clone3, "plain");
    in_child(child_clone, "newuser");
    in_child(child_clone, "newns");
    abi_in_child("x32");
    abi_in_child("i386");
}

/* ------------------------------------------------------------------ */
/* 4. The mount family                                                  */
/* ------------------------------------------------------------------ */

static void attack_mount(void) {
    TRY("mount_tmpfs", mount("none", "/tmp", "tmpfs", 0, NULL));
    TRY("mount_bind", mount("/", "/tmp", NULL, MS_BIND | MS_REC, NULL));
    TRY("mount_remount_rw", mount(NULL, "/", NULL, MS_REMOUNT | MS_BIND, NULL));
    TRY("mount_sysfs", mount("sysfs", "/tmp", "sysfs", 0, NULL));
    TRY("umount_proc", umount2("/proc", MNT_DETACH));
    TRY("umount_work", umount2("/work", MNT_DETACH));
    TRY("pivot_root", syscall(SYS_pivot_root, ".", "."));
    TRY_FD("open_tree_plain", syscall(SYS_open_tree, AT_FDCWD, "/", 0));
    TRY_FD("open_tree_clone", syscall(SYS_open_tree, AT_FDCWD, "/", P_OPEN_TREE_CLONE | P_AT_RECURSIVE));
    TRY("move_mount", syscall(SYS_move_mount, AT_FDCWD, "/tmp", AT_FDCWD, "/work", 0));
    TRY_FD("fsopen", syscall(SYS_fsopen, "tmpfs", 0));
    TRY_FD("fsmount", syscall(SYS_fsmount, 0, 0, 0));
    TRY("fsconfig", syscall(SYS_fsconfig, 0, P_FSCONFIG_SET_STRING, "source", "x", 0));
    TRY_FD("fspick", syscall(SYS_fspick, AT_FDCWD, "/", 0));
    uint64_t attr[4] = {0, 0, 0, 0};
    TRY("mount_setattr", syscall(SYS_mount_setattr, AT_FDCWD, "/tmp", 0, attr, sizeof attr));
    TRY("chroot", chroot("/tmp"));
}

/* ------------------------------------------------------------------ */
/* 5. ptrace and process_vm_*                                            */
/* ------------------------------------------------------------------ */

static long vm_read(pid_t pid) {
    static char target[64];
    char local[64];
    struct iovec l = {local, sizeof local}, r = {target, sizeof target};
    return (long)process_vm_readv(pid, &l, 1, &r, 1, 0);
}

static long vm_write(pid_t pid) {
    static char target[64];
    char local[64] = {0};
    struct iovec l = {local, sizeof local}, r = {target, sizeof target};
    return (long)process_vm_writev(pid, &l, 1, &r, 1, 0);
}

static long read_proc_mem(pid_t pid) {
    char path[64], buf[16];
    snprintf(path, sizeof path, "/proc/%d/mem", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    long r = pread(fd, buf, sizeof buf, (off_t)(uintptr_t)&line);
    int e = errno;
    close(fd);
    errno = e;
    return r;
}

static void attack_ptrace(void) {
    pid_t sib = sleeping_child();
    j_begin("pids");
    j_bool("ok", 1);
    j_int("self", getpid());
    j_int("sibling", sib);
    j_end();
    TRY("ptrace_attach_pid1", syscall(SYS_ptrace, 16 /* PTRACE_ATTACH */, 1, 0, 0));
    long r = syscall(SYS_ptrace, 16, sib, 0, 0);
    report("ptrace_attach_sibling", r, errno);
    if (r == 0) {
        waitpid(sib, NULL, __WALL);
        syscall(SYS_ptrace, 17 /* PTRACE_DETACH */, sib, 0, 0);
    }
    TRY("ptrace_seize_sibling", syscall(SYS_ptrace, 0x4206 /* PTRACE_SEIZE */, sib, 0, 0));
    TRY("process_vm_readv_pid1", vm_read(1));
    TRY("process_vm_readv_sibling", vm_read(sib));
    TRY("process_vm_writev_sibling", vm_write(sib));
    TRY("proc_mem_pid1", read_proc_mem(1));
    reap(sib);
    pid_t p = fork();
    if (p == 0) {
        TRY("ptrace_traceme", syscall(SYS_ptrace, 0 /* PTRACE_TRACEME */, 0, 0, 0));
        _exit(0);
    }
    waitpid(p, NULL, 0);
}

/* ------------------------------------------------------------------ */
/* 6, 7. Keyrings and kernel interfaces                                  */
/* ------------------------------------------------------------------ */

static void attack_keys(void) {
    TRY("keyctl_get_session", syscall(SYS_keyctl, P_KEYCTL_GET_KEYRING_ID, P_KEY_SPEC_SESSION_KEYRING, 0));
    TRY("keyctl_join_session", syscall(SYS_keyctl, P_KEYCTL_JOIN_SESSION_KEYRING, "escape"));
    TRY("add_key", syscall(SYS_add_key, "user", "escape", "x", 1, P_KEY_SPEC_PROCESS_KEYRING));
    TRY("request_key", syscall(SYS_request_key, "user", "escape", NULL, 0));
}

static void attack_kernel_iface(void) {
    char params[120];
    memset(params, 0, sizeof params);
    TRY_FD("io_uring_setup", syscall(SYS_io_uring_setup, 8, params));
    TRY("io_uring_enter", syscall(SYS_io_uring_enter, 0, 1, 0, 0, NULL, 0));
    TRY("io_uring_register", syscall(SYS_io_uring_register, 0, 0, NULL, 0));
    TRY_FD("userfaultfd", syscall(SYS_userfaultfd, O_CLOEXEC));
    TRY_FD("dev_userfaultfd", open("/dev/userfaultfd", O_RDWR | O_CLOEXEC));
    /* BPF_MAP_CREATE of a tiny array map. */
    uint32_t attr[32];
    memset(attr, 0, sizeof attr);
    attr[0] = 2; /* BPF_MAP_TYPE_ARRAY */
    attr[1] = 4;
    attr[2] = 4;
    attr[3] = 1;
    TRY_FD("bpf", syscall(SYS_bpf, 0 /* BPF_MAP_CREATE */, attr, sizeof attr));
    /* A software clock counter on ourselves: the least privileged event. */
    uint32_t pe[32];
    memset(pe, 0, sizeof pe);
    pe[0] = 1;   /* PERF_TYPE_SOFTWARE */
    pe[1] = 128; /* size: PERF_ATTR_SIZE_VER7 is 128 */
    pe[2] = 0;   /* PERF_COUNT_SW_CPU_CLOCK */
    TRY_FD("perf_event_open", syscall(SYS_perf_event_open, pe, 0, -1, -1, 0));
}

/* ------------------------------------------------------------------ */
/* 8. Terminal injection                                                 */
/* ------------------------------------------------------------------ */

static void tty_attempts(const char *where, int fd) {
    char name[64], c = 'x', sub[2] = {P_TIOCL_GETSHIFTSTATE, 0};
    snprintf(name, sizeof name, "tiocsti_%s", where);
    TRY(name, ioctl(fd, TIOCSTI, &c));
    snprintf(name, sizeof name, "tiocsti_high_%s", where);
    TRY(name, syscall(SYS_ioctl, fd, 0x100000000UL | (unsigned long)TIOCSTI, &c));
    snprintf(name, sizeof name, "tioclinux_%s", where);
    TRY(name, ioctl(fd, TIOCLINUX, sub));
    snprintf(name, sizeof name, "tioclinux_high_%s", where);
    TRY(name, syscall(SYS_ioctl, fd, 0x100000000UL | (unsigned long)TIOCLINUX, sub));
}

static void attack_tty(void) {
    j_begin("stdin_isatty");
    j_bool("ok", isatty(0));
    j_end();
    tty_attempts("stdin", 0);
    TRY_FD("open_dev_tty", open("/dev/tty", O_RDWR | O_CLOEXEC));
    int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    report("open_ptmx", m, errno);
    if (m < 0) return;
    int r = grantpt(m) == 0 && unlockpt(m) == 0 ? 0 : -1;
    report("unlockpt", r, errno);
    char *sname = ptsname(m);
    int s = sname ? open(sname, O_RDWR | O_NOCTTY | O_CLOEXEC) : -1;
    report("open_pts", s, errno);
    if (s >= 0) {
        tty_attempts("pts", s);
        close(s);
    }
    tty_attempts("ptmx", m);
    close(m);
}

/* ------------------------------------------------------------------ */
/* 9. /proc, /sys and cgroupfs                                           */
/* ------------------------------------------------------------------ */

static void try_write(const char *name, const char *path, const char *data) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        report(name, -1, errno);
        return;
    }
    errno = 0;
    long w = write(fd, data, strlen(data));
    report(name, w, errno);
    close(fd);
}

/* Reads a whole file: reports the bytes read (0 when masked or denied). */
static void try_read(const char *name, const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    long total = 0;
    int e = 0;
    if (fd < 0) {
        e = errno;
    } else {
        char buf[4096];
        for (;;) {
            ssize_t r = read(fd, buf, sizeof buf);
            if (r < 0 && errno == EINTR) continue;
            if (r < 0) e = errno;
            if (r <= 0) break;
            total += r;
            if (total > (1 << 20)) break;
        }
        close(fd);
    }
    j_begin(name);
    j_bool("ok", fd >= 0 && e == 0);
    j_int("errno", e);
    j_str("errname", errname(e));
    j_int("bytes", total);
    j_end();
}

static void attack_proc(void) {
    try_write("write_proc_sys_hostname", "/proc/sys/kernel/hostname", "escaped\n");
    try_write("write_proc_sys_core_pattern", "/proc/sys/kernel/core_pattern", "|/tmp/x\n");
    try_write("write_proc_sys_ip_forward", "/proc/sys/net/ipv4/ip_forward", "1\n");
    try_write("write_proc_sys_ping_group_range", "/proc/sys/net/ipv4/ping_group_range", "0 0\n");
    try_write("write_sysrq_trigger", "/proc/sysrq-trigger", "h");
    TRY_FD("open_sys", open("/sys", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    TRY_FD("open_sys_fs_cgroup", open("/sys/fs/cgroup", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    try_read("read_kcore", "/proc/kcore");
    try_read("read_keys", "/proc/keys");
    try_read("read_timer_list", "/proc/timer_list");

    /* Every cgroup filesystem visible in mountinfo, and a write into it. */
    FILE *f = fopen("/proc/self/mountinfo", "re");
    char buf[4096];
    int visible = 0;
    while (f && fgets(buf, sizeof buf, f)) {
        char *sep = strstr(buf, " - ");
        if (!sep || strncmp(sep + 3, "cgroup", 6) != 0) continue;
        visible++;
        char mnt[1024];
        if (sscanf(buf, "%*s %*s %*s %*s %1023s", mnt) == 1) {
            char path[1100];
            snprintf(path, sizeof path, "%s/cgroup.procs", mnt);
            try_write("write_cgroupfs", path, "1\n");
        }
    }
    if (f) fclose(f);
    j_begin("cgroupfs_visible");
    j_bool("ok", 1);
    j_int("count", visible);
    j_end();
}

/* ------------------------------------------------------------------ */
/* 10, 11, 12. Devices, set-id bits, security xattrs                     */
/* ------------------------------------------------------------------ */

static void attack_mknod(void) {
    TRY("mknod_char_tmp", mknod("/tmp/null", S_IFCHR | 0666, makedev(1, 3)));
    TRY("mknod_block_tmp", mknod("/tmp/sda", S_IFBLK | 0666, makedev(8, 0)));
    TRY("mknod_char_work", mknod("/work/mem", S_IFCHR | 0666, makedev(1, 1)));
    TRY("mknod_fifo_tmp", mknod("/tmp/fifo", S_IFIFO | 0644, 0));
}

static void report_mode(const char *name, const char *path) {
    struct stat st;
    int r = stat(path, &st);
    j_begin(name);
    j_bool("ok", r == 0);
    j_int("mode", r == 0 ? (long long)(st.st_mode & 07777) : -1);
    j_end();
}

static void attack_setid(void) {
    const char *f = "/tmp/setid";
    int fd = open(f, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    TRY("chmod_suid", chmod(f, 04755));
    TRY("chmod_sgid", chmod(f, 02755));
    TRY("fchmod_suid", fchmod(fd, 04755));
    TRY("fchmodat_suid", fchmodat(AT_FDCWD, f, 04755, 0));
    TRY("fchmodat2_suid", syscall(SYS_fchmodat2, AT_FDCWD, f, 04755, 0));
    TRY("chmod_plain", chmod(f, 0755));
    report_mode("setid_final_mode", f);
    close(fd);
    TRY("mknod_reg_suid", mknod("/tmp/mknod-suid", S_IFREG | 04755, 0));
    report_mode("mknod_reg_suid_mode", "/tmp/mknod-suid");
    TRY_FD("open_creat_suid", open("/tmp/creat-suid", O_CREAT | O_WRONLY | O_CLOEXEC, 04755));
    report_mode("creat_suid_mode", "/tmp/creat-suid");
    TRY_FD("open_creat_suid_work", open("/work/creat-suid", O_CREAT | O_WRONLY | O_CLOEXEC, 04755));
    report_mode("creat_suid_work_mode", "/work/creat-suid");

    /* exec of the setuid-root copy of this binary in the image */
    report_mode("suid_binary_mode", "/usr/local/bin/print-euid");
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) < 0) return;
    pid_t p = fork();
    if (p == 0) {
        dup2(pfd[1], 1);
        char *argv[] = {"print-euid", NULL};
        execv("/usr/local/bin/print-euid", argv);
        _exit(127);
    }
    close(pfd[1]);
    char buf[512];
    ssize_t n = 0, r;
    while ((r = read(pfd[0], buf + n, sizeof buf - 1 - (size_t)n)) > 0) n += r;
    close(pfd[0]);
    int st = 0;
    waitpid(p, &st, 0);
    buf[n] = 0;
    if (n == 0) report("suid_exec", -1, WIFEXITED(st) ? WEXITSTATUS(st) : 0);
    else write_all(1, buf, (size_t)n);
}

static void attack_xattr(void) {
    const char *f = "/tmp/xattr";
    int fd = open(f, O_CREAT | O_WRONLY | O_CLOEXEC, 0755);
    /* version 2 file capability granting CAP_SYS_ADMIN, effective */
    uint32_t cap[5] = {0x02000001, 1u << 21, 1u << 21, 0, 0};
    TRY("setxattr_security_capability", setxattr(f, "security.capability", cap, 20, 0));
    TRY("lsetxattr_security_capability", lsetxattr(f, "security.capability", cap, 20, 0));
    TRY("fsetxattr_security_capability", fsetxattr(fd, "security.capability", cap, 20, 0));
    struct { uint64_t value; uint32_t size, flags; } args = {(uint64_t)(uintptr_t)cap, 20, 0};
    TRY("setxattrat_security_capability",
        syscall(SYS_setxattrat, AT_FDCWD, f, 0, "security.capability", &args, sizeof args));
    TRY("setxattr_security_selinux", setxattr(f, "security.selinux", "x", 1, 0));
    TRY("setxattr_user", setxattr(f, "user.escape", "x", 1, 0));
    close(fd);
}

/* ------------------------------------------------------------------ */
/* 13. Privileged knobs                                                  */
/* ------------------------------------------------------------------ */

static void report_rlimit(const char *name, int res) {
    struct rlimit rl;
    getrlimit(res, &rl);
    j_begin(name);
    j_bool("ok", 1);
    j_int("soft", rl.rlim_cur == RLIM_INFINITY ? -1 : (long long)rl.rlim_cur);
    j_int("hard", rl.rlim_max == RLIM_INFINITY ? -1 : (long long)rl.rlim_max);
    j_end();
}

static void attack_privileged(void) {
    report_rlimit("rlimit_nofile", RLIMIT_NOFILE);
    report_rlimit("rlimit_fsize", RLIMIT_FSIZE);
    report_rlimit("rlimit_core", RLIMIT_CORE);
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    struct rlimit up = {rl.rlim_max + 1, rl.rlim_max + 1};
    TRY("setrlimit_nofile_raise_hard", setrlimit(RLIMIT_NOFILE, &up));
    getrlimit(RLIMIT_CORE, &rl);
    struct rlimit core = {rl.rlim_max == RLIM_INFINITY ? RLIM_INFINITY : rl.rlim_max + 4096,
                          rl.rlim_max == RLIM_INFINITY ? RLIM_INFINITY : rl.rlim_max + 4096};
    TRY("setrlimit_core_raise_hard", setrlimit(RLIMIT_CORE, &core));
    TRY("sethostname", sethostname("localhost", 9));
    TRY("setdomainname", setdomainname("escape", 6));
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    TRY("clock_settime", clock_settime(CLOCK_REALTIME, &now));
    struct timeval tv;
    gettimeofday(&tv, NULL);
    TRY("settimeofday", settimeofday(&tv, NULL));
    struct timex tx;
    memset(&tx, 0, sizeof tx);
    tx.modes = 0x0002; /* ADJ_FREQUENCY, value 0 */
    TRY("adjtimex_set", syscall(SYS_adjtimex, &tx));
    TRY("init_module", syscall(SYS_init_module, NULL, 0, ""));
    TRY("finit_module", syscall(SYS_finit_module, -1, "", 0));
    TRY("delete_module", syscall(SYS_delete_module, "escape_nonexistent", 0));
    TRY("kexec_load", syscall(SYS_kexec_load, 0, 0, NULL, 0xdead0000UL));
    TRY("kexec_file_load", syscall(SYS_kexec_file_load, -1, -1, 0, "", 0xdead0000UL));
    /* magic2 is wrong on purpose: even with CAP_SYS_BOOT this does nothing */
    TRY("reboot", syscall(SYS_reboot, 0xfee1dead, 0, 0, NULL));
    TRY("swapon", syscall(SYS_swapon, "/tmp/nonexistent-swap", 0));
    TRY("swapoff", syscall(SYS_swapoff, "/tmp/nonexistent-swap"));
    TRY("acct", syscall(SYS_acct, "/tmp/acct"));
    TRY("setuid_0", syscall(SYS_setuid, 0));
    TRY("setgid_0", syscall(SYS_setgid, 0));
    gid_t zero = 0;
    TRY("setgroups_0", syscall(SYS_setgroups, 1, &zero));
    TRY("iopl", syscall(SYS_iopl, 3));
    TRY("ioperm", syscall(SYS_ioperm, 0x80, 1, 1));
    TRY("vhangup", syscall(SYS_vhangup));
    /* Signal 0 only checks permission: init is outside the step's Landlock
     * domain (signal scoping) and not its user. */
    TRY("kill_pid1", kill(1, 0));
}

/* ------------------------------------------------------------------ */
/* 14, 15. Resource exhaustion                                           */
/* ------------------------------------------------------------------ */

/* fork_bomb MAX: forks sleeping children until 20 forks in a row fail. */
static void attack_fork_bomb(const char *max_s) {
    int max = max_s ? atoi(max_s) : 4096;
    pid_t *pids = calloc((size_t)max, sizeof *pids);
    int forks = 0, fails = 0, last = 0, eagain = 0;
    while (pids && forks < max && fails < 20) {
        pid_t p = fork();
        if (p == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            for (;;) pause();
        }
        if (p < 0) {
            last = errno;
            eagain |= last == EAGAIN;
            fails++;
            usleep(2000);
        } else {
            pids[forks++] = p;
            fails = 0;
        }
    }
    for (int i = 0; i < forks; i++) kill(pids[i], SIGKILL);
    for (int i = 0; i < forks; i++) waitpid(pids[i], NULL, 0);
    j_begin("fork_bomb");
    j_bool("ok", last == 0);
    j_int("errno", last);
    j_str("errname", errname(last));
    j_int("forks", forks);
    j_bool("eagain", eagain);
    j_end();
}

/* memory_hog MAX_MIB: touches 1 MiB chunks until killed. */
static void attack_memory_hog(const char *max_s) {
    long max = max_s ? atol(max_s) : 2048, mib = 0;
    for (; mib < max; mib++) {
        char *p = malloc(1 << 20);
        if (!p) break;
        memset(p, (int)(mib & 0xff) | 1, 1 << 20);
    }
    j_begin("memory_hog");
    j_bool("ok", mib == max);
    j_int("errno", mib == max ? 0 : ENOMEM);
    j_int("mib", mib);
    j_end();
}

/* Writes 64 KiB blocks to PATH until an error; reports bytes and errno. */
static void fill(const char *name, const char *path, long long cap) {
    static char block[65536];
    memset(block, 'x', sizeof block);
    int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0644);
    long long total = 0;
    int e = 0;
    if (fd < 0) e = errno;
    while (fd >= 0 && total < cap) {
        ssize_t w = write(fd, block, sizeof block);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) {
            e = errno;
            break;
        }
        total += w;
    }
    if (fd >= 0) close(fd);
    j_begin(name);
    j_bool("ok", e == 0);
    j_int("errno", e);
    j_str("errname", errname(e));
    j_int("bytes", total);
    j_end();
}

/* ------------------------------------------------------------------ */
/* 16, 17. Processes that try to outlive the step                       */
/* ------------------------------------------------------------------ */

static void detach_stdio(void) {
    int n = open("/dev/null", O_RDWR);
    if (n >= 0) {
        dup2(n, 0);
        dup2(n, 1);
        dup2(n, 2);
        if (n > 2) close(n);
    }
}

/* The orphan (child or grandchild) writes its pid to a pipe once it is in
 * place, so the probe only exits, and reports it, when there really is a
 * process left behind for the sandbox to end. */
static void attack_orphan(const char *kind) {
    int ready[2];
    if (pipe2(ready, O_CLOEXEC) < 0) {
        report(kind, -1, errno);
        return;
    }
    pid_t p = fork();
    if (p < 0) {
        report(kind, -1, errno);
        return;
    }
    if (p == 0) {
        close(ready[0]);
        if (strcmp(kind, "daemon") == 0) {
            setsid();
            if (fork() != 0) _exit(0);
            detach_stdio();
        } else if (strcmp(kind, "setsid_child") == 0) {
            setsid();
            detach_stdio();
        } else if (strcmp(kind, "sigterm_child") == 0) {
            signal(SIGTERM, SIG_IGN);
            signal(SIGHUP, SIG_IGN);
            signal(SIGINT, SIG_IGN);
            detach_stdio();
        } else { /* stdout_grandchild: keeps the step's stdout and stderr */
            if (fork() != 0) _exit(0);
        }
        pid_t me = getpid();
        write_all(ready[1], (const char *)&me, sizeof me);
        close(ready[1]);
        sleep_seconds(3600);
        _exit(0);
    }
    close(ready[1]);
    pid_t orphan = 0;
    ssize_t n;
    while ((n = read(ready[0], &orphan, sizeof orphan)) < 0 && errno == EINTR) {
    }
    close(ready[0]);
    if (strcmp(kind, "daemon") == 0 || strcmp(kind, "stdout_grandchild") == 0) waitpid(p, NULL, 0);
    j_begin(kind);
    j_bool("ok", n == (ssize_t)sizeof orphan && kill(orphan, 0) == 0);
    j_int("orphan", orphan);
    j_end();
}

/* ------------------------------------------------------------------ */
/* 18, 19. Outputs and inputs                                            */
/* ------------------------------------------------------------------ */

static void attack_outputs(const char *kind) {
    if (strcmp(kind, "symlinks") == 0) {
        TRY("mkdir_out", mkdir("/work/out", 0755));
        TRY("symlink_shadow", symlink("/etc/shadow", "/work/out/shadow"));
        TRY("symlink_up", symlink("../..", "/work/out/up"));
        TRY("symlink_deep", symlink("../../../../../../etc/passwd", "/work/out/deep"));
        TRY("symlink_proc_root", symlink("/proc/1/root/etc/shadow", "/work/out/proc_root"));
        int fd = open("/work/out/regular", O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
        TRY("write_regular", write(fd, "regular\n", 8));
        close(fd);
    } else if (strcmp(kind, "hardlink") == 0) {
        TRY("link_protected_input", link("/work/protected.txt", "/work/hard-protected"));
        TRY("link_input", link("/work/input.txt", "/work/hard"));
        int fd = open("/work/hard", O_WRONLY | O_APPEND | O_CLOEXEC);
        if (fd < 0) {
            report("write_through_link", -1, errno);
        } else {
            TRY("write_through_link", write(fd, "MODIFIED\n", 9));
            close(fd);
        }
    } else if (strcmp(kind, "fifo") == 0) {
        TRY("mkfifo_work", mkfifo("/work/fifo", 0644));
    } else if (strcmp(kind, "socket") == 0) {
        int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        strcpy(a.sun_path, "/work/sock");
        TRY("bind_socket_work", bind(s, (struct sockaddr *)&a, sizeof a));
        close(s);
    } else if (strcmp(kind, "setuid") == 0) {
        TRY_FD("creat_suid_output", open("/work/suid-out", O_CREAT | O_WRONLY | O_CLOEXEC, 04755));
        TRY_FD("creat_sgid_output", open("/work/sgid-out", O_CREAT | O_WRONLY | O_CLOEXEC, 02755));
        TRY("mkdir_sgid_output", mkdir("/work/sgid-dir", 02755));
    } else if (strcmp(kind, "symlink_dir") == 0) {
        TRY("symlink_etc_dir", symlink("/etc", "/work/linkdir"));
    } else {
        report("outputs_unknown_kind", -1, EINVAL);
    }
}

static void attack_write_input(void) {
    int fd = open("/work/input.txt", O_WRONLY | O_TRUNC | O_CLOEXEC);
    report("open_input_trunc", fd, errno);
    if (fd >= 0) {
        TRY("write_input", write(fd, "PWNED\n", 6));
        close(fd);
    }
    TRY_FD("open_readonly_input", open("/work/readonly.txt", O_WRONLY | O_CLOEXEC));
    TRY("chmod_input", chmod("/work/input.txt", 0777));
    TRY("truncate_nested_input", truncate("/work/dir/nested.txt", 0));
    TRY("unlink_input", unlink("/work/input2.txt"));
    TRY("rename_nested_input", rename("/work/dir/nested.txt", "/work/renamed.txt"));
    TRY_FD("open_probe_write", open("/work/probe", O_WRONLY | O_CLOEXEC));
}

/* ------------------------------------------------------------------ */
/* 20, 21, 22. Descriptors, /proc links, identity                        */
/* ------------------------------------------------------------------ */

static void attack_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    char fds[1024] = "";
    if (!d) {
        report("fds", -1, errno);
        return;
    }
    int own = dirfd(d), count = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || atoi(e->d_name) == own) continue;
        char buf[300];
        snprintf(buf, sizeof buf, "%s%s", count++ ? "," : "", e->d_name);
        strncat(fds, buf, sizeof fds - strlen(fds) - 1);
    }
    closedir(d);
    j_begin("fds");
    j_bool("ok", 1);
    j_str("fds", fds);
    j_end();
    TRY("fcntl_fd7", fcntl(7, F_GETFD));
}

static void same_file(const char *name, const char *a, const char *b) {
    struct stat x, y;
    int r1 = stat(a, &x), e1 = errno, r2 = stat(b, &y);
    j_begin(name);
    j_bool("ok", r1 == 0 && r2 == 0);
    j_int("errno", r1 == 0 ? 0 : e1);
    j_str("errname", errname(r1 == 0 ? 0 : e1));
    j_bool("same", r1 == 0 && r2 == 0 && x.st_dev == y.st_dev && x.st_ino == y.st_ino);
    j_end();
}

static void try_create(const char *name, const char *dir, const char *token) {
    char path[512];
    snprintf(path, sizeof path, "%s/escape-%s", dir, token);
    TRY_FD(name, open(path, O_CREAT | O_WRONLY | O_EXCL | O_CLOEXEC, 0644));
}

static void attack_proc_links(const char *token) {
    TRY_FD("open_self_exe_write", open("/proc/self/exe", O_WRONLY | O_CLOEXEC));
    TRY_FD("open_pid1_exe_write", open("/proc/1/exe", O_WRONLY | O_CLOEXEC));
    TRY_FD("open_pid1_exe_read", open("/proc/1/exe", O_RDONLY | O_CLOEXEC));
    char target[PATH_MAX];
    ssize_t n = readlink("/proc/1/exe", target, sizeof target - 1);
    int e = errno;
    target[n > 0 ? n : 0] = 0;
    j_begin("readlink_pid1_exe");
    j_bool("ok", n >= 0);
    j_int("errno", n >= 0 ? 0 : e);
    j_str("target", target);
    j_end();
    same_file("proc1_root_is_root", "/proc/1/root/", "/");
    same_file("self_root_is_root", "/proc/self/root/", "/");
    same_file("proc1_cwd", "/proc/1/cwd/", "/");
    try_create("create_proc1_root", "/proc/1/root", token);
    try_create("create_proc1_root_etc", "/proc/1/root/etc", token);
    try_create("create_proc1_root_bin", "/proc/1/root/bin", token);
    try_create("create_self_root", "/proc/self/root", token);
    try_create("create_root", "", token);
    try_create("create_etc", "/etc", token);
    try_create("create_bin", "/bin", token);
    try_create("create_dev", "/dev", token);
    try_create("create_proc1_cwd", "/proc/1/cwd", token);
    TRY_FD("open_proc1_root_passwd_write", open("/proc/1/root/etc/passwd", O_WRONLY | O_CLOEXEC));
    TRY_FD("open_passwd_write", open("/etc/passwd", O_WRONLY | O_CLOEXEC));
    TRY_FD("open_busybox_write", open("/bin/busybox", O_WRONLY | O_CLOEXEC));
}

extern char **environ;

static void status_field(const char *key, char *out, size_t outlen) {
    FILE *f = fopen("/proc/self/status", "re");
    char buf[512];
    size_t kl = strlen(key);
    out[0] = 0;
    while (f && fgets(buf, sizeof buf, f)) {
        if (strncmp(buf, key, kl) == 0 && buf[kl] == ':') {
            char *v = buf + kl + 1;
            while (*v == ' ' || *v == '\t') v++;
            v[strcspn(v, "\n")] = 0;
            snprintf(out, outlen, "%s", v);
        }
    }
    if (f) fclose(f);
}

static void attack_identity(void) {
    j_begin("environment");
    j_bool("ok", 1);
    add(",\"env\":[");
    for (char **e = environ; *e; e++) {
        if (e != environ) add(",");
        add_escaped(*e);
    }
    add("]");
    j_end();

    struct utsname u;
    uname(&u);
    j_begin("identity");
    j_bool("ok", 1);
    j_str("hostname", u.nodename);
    j_str("domainname", u.domainname);
    j_int("uid", getuid());
    j_int("euid", geteuid());
    j_int("gid", getgid());
    j_int("egid", getegid());
    gid_t groups[64];
    int ng = getgroups(64, groups);
    char gl[512] = "";
    for (int i = 0; i < ng; i++) {
        char b[16];
        snprintf(b, sizeof b, "%s%u", i ? "," : "", (unsigned)groups[i]);
        strncat(gl, b, sizeof gl - strlen(gl) - 1);
    }
    j_str("groups", gl);
    char cwd[PATH_MAX];
    j_str("cwd", getcwd(cwd, sizeof cwd) ? cwd : "?");
    mode_t m = umask(022);
    umask(m);
    j_int("umask", m);
    j_int("pid", getpid());
    j_int("ppid", getppid());
    j_int("sid", getsid(0));
    const char *keys[] = {"Seccomp", "NoNewPrivs", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        char v[128];
        status_field(keys[i], v, sizeof v);
        j_str(keys[i], v);
    }
    j_end();
}

/* ------------------------------------------------------------------ */

static void print_euid(void) {
    j_begin("suid_exec");
    j_bool("ok", 1);
    j_int("uid", getuid());
    j_int("euid", geteuid());
    j_int("gid", getgid());
    j_int("egid", getegid());
    j_end();
}

/* ------------------------------------------------------------------ */
/* Anomaly indicators (issue 8): network attempts, foreign executables, */
/* writes outside the outputs. The status's `anomalies` is checked.     */
/* ------------------------------------------------------------------ */

static int sendto_in(const char *ip, int port, const char *payload) {
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, ip, &a.sin_addr);
    int r = (int)sendto(s, payload, strlen(payload), 0, (struct sockaddr *)&a, sizeof a) < 0 ? -1 : 0;
    int e = errno;
    close(s);
    errno = e;
    return r;
}

/* sendmsg (COUNT == 0) or sendmmsg of COUNT datagrams to IP:PORT, the
 * destination in msg_name. */
static int sendmsg_in(const char *ip, int port, int count) {
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, ip, &a.sin_addr);
    char payload[] = "q";
    struct iovec iov = {.iov_base = payload, .iov_len = 1};
    struct mmsghdr m[2];
    memset(m, 0, sizeof m);
    for (int i = 0; i < 2; i++) {
        m[i].msg_hdr.msg_name = &a;
        m[i].msg_hdr.msg_namelen = sizeof a;
        m[i].msg_hdr.msg_iov = &iov;
        m[i].msg_hdr.msg_iovlen = 1;
    }
    int r = count == 0 ? (int)sendmsg(s, &m[0].msg_hdr, 0) : sendmmsg(s, m, (unsigned)count, 0);
    int e = errno;
    close(s);
    errno = e;
    return r < 0 ? -1 : 0;
}

static int connect6_in(const char *ip, int port) {
    int s = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) return -1;
    struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port)};
    inet_pton(AF_INET6, ip, &a.sin6_addr);
    int r = connect(s, (struct sockaddr *)&a, sizeof a);
    int e = errno;
    close(s);
    errno = e;
    return r;
}

/* fexecve of a memfd holding FROM (execveat with AT_EMPTY_PATH); returns
 * the exit status or -1. */
static int run_memfd(const char *from) {
    int fd = (int)syscall(SYS_memfd_create, "tool", 0);
    int in = open(from, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || in < 0) return -1;
    char buf[65536];
    ssize_t n;
    while ((n = read(in, buf, sizeof buf)) > 0)
        if (write(fd, buf, (size_t)n) != n) return -1;
    close(in);
    pid_t p = fork();
    if (p == 0) {
        char *argv[] = {"true", NULL};
        char *envp[] = {NULL};
        syscall(SYS_execveat, fd, "", argv, envp, AT_EMPTY_PATH);
        _exit(127);
    }
    close(fd);
    int st;
    if (p < 0 || waitpid(p, &st, 0) < 0) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* A UDP listener the probe starts on its own 127.0.0.1: a connected send
 * and a sendto reach it. Returns how many datagrams arrived (2), -1 on a
 * failed call. */
static int loopback_roundtrip(void) {
    int srv = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (srv < 0 || bind(srv, (struct sockaddr *)&a, sizeof a) < 0 ||
        getsockname(srv, (struct sockaddr *)&a, &len) < 0)
        return -1;
    int c = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof a) < 0 || send(c, "one", 3, 0) != 3) return -1;
    if (sendto(c, "two", 3, 0, (struct sockaddr *)&a, sizeof a) != 3) return -1;
    struct timeval tv = {5, 0};
    setsockopt(srv, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char buf[8];
    int got = 0;
    for (int i = 0; i < 2; i++)
        if (recv(srv, buf, sizeof buf, 0) == 3) got++;
    close(c);
    close(srv);
    return got;
}

/* Copies FROM to TO (mode 0755). */
static int copy_file(const char *from, const char *to) {
    int in = open(from, O_RDONLY | O_CLOEXEC);
    int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
    if (in < 0 || out < 0) return -1;
    char buf[65536];
    ssize_t n;
    while ((n = read(in, buf, sizeof buf)) > 0)
        if (write(out, buf, (size_t)n) != n) return -1;
    close(in);
    close(out);
    return n < 0 ? -1 : 0;
}

/* Runs PATH with argv[0] = "true"; returns its exit status or -1. */
static int run_true(const char *path) {
    pid_t p = fork();
    if (p == 0) {
        char *argv[] = {"true", NULL};
        execv(path, argv);
        _exit(127);
    }
    int st;
    if (p < 0 || waitpid(p, &st, 0) < 0) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void attack_anomalies(int argc, char **argv) {
    unsigned long long host_net = argc > 0 ? strtoull(argv[0], NULL, 10) : 0;
    int others = report_interfaces();
    unsigned long long my_net = ns_inode("net");
    if (my_net != 0 && my_net != host_net && others == 0) {
        TRY("anomaly_tcp_outside", connect_in(SOCK_STREAM, "10.0.0.1", 80, NULL));
        TRY("anomaly_udp_sendto", sendto_in("1.1.1.1", 53, "q"));
        TRY("anomaly_udp_sendmsg", sendmsg_in("1.0.0.1", 53, 0));
        TRY("anomaly_udp_sendmmsg", sendmsg_in("9.9.9.9", 53, 2));
        TRY("anomaly_tcp6_outside", connect6_in("2001:db8::1", 443));
    } else {
        report("anomaly_tcp_outside", -1, EALREADY);
        report("anomaly_udp_sendto", -1, EALREADY);
        report("anomaly_udp_sendmsg", -1, EALREADY);
        report("anomaly_udp_sendmmsg", -1, EALREADY);
        report("anomaly_tcp6_outside", -1, EALREADY);
    }
    int got = loopback_roundtrip();
    j_begin("anomaly_loopback");
    j_bool("ok", got == 2);
    j_int("received", got);
    j_end();
    /* The image's own binary and the probe (an input) are not foreign. */
    j_begin("anomaly_exec_image");
    j_int("status", run_true("/bin/true"));
    j_end();
    int c = copy_file("/bin/busybox", "/tmp/x");
    j_begin("anomaly_exec_tmp");
    j_int("copied", c);
    j_int("status", c == 0 ? run_true("/tmp/x") : -1);
    j_end();
    int w = copy_file("/bin/busybox", "/work/made");
    j_begin("anomaly_exec_work");
    j_int("copied", w);
    j_int("status", w == 0 ? run_true("/work/made") : -1);
    j_end();
    mkdir("/work/out", 0755);
    j_begin("anomaly_exec_memfd");
    j_int("status", run_memfd("/bin/busybox"));
    j_end();
    int f = open("/work/out/result", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    TRY("anomaly_write_output", f < 0 ? -1 : write(f, "ok\n", 3));
    if (f >= 0) close(f);
}

int main(int argc, char **argv) {
    const char *base = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
    if (strcmp(base, "print-euid") == 0) {
        print_euid();
        return 0;
    }
    if (argc < 4) {
        fprintf(stderr, "usage: probe HOST_MNT_NS HOST_UTS_NS ATTACK [ARGS...]\n");
        return 2;
    }
    /* The guard: refuse unless both namespaces differ from the host's. */
    unsigned long long host_mnt = strtoull(argv[1], NULL, 10), host_uts = strtoull(argv[2], NULL, 10);
    unsigned long long mnt = ns_inode("mnt"), uts = ns_inode("uts");
    if (mnt == 0 || uts == 0 || host_mnt == 0 || host_uts == 0 || mnt == host_mnt || uts == host_uts) {
        printf("REFUSED: not in a sandbox\n");
        fflush(stdout);
        return 99;
    }
    const char *attack = argv[3];
    char **rest = argv + 4;
    int nrest = argc - 4;
    const char *arg0 = nrest > 0 ? rest[0] : NULL;
    signal(SIGPIPE, SIG_IGN);

    if (strcmp(attack, "net") == 0) attack_net(nrest, rest);
    else if (strcmp(attack, "anomalies") == 0) attack_anomalies(nrest, rest);
    else if (strcmp(attack, "namespaces") == 0) attack_namespaces();
    else if (strcmp(attack, "mount") == 0) attack_mount();
    else if (strcmp(attack, "ptrace") == 0) attack_ptrace();
    else if (strcmp(attack, "keys") == 0) attack_keys();
    else if (strcmp(attack, "kernel_iface") == 0) attack_kernel_iface();
    else if (strcmp(attack, "tty") == 0) attack_tty();
    else if (strcmp(attack, "proc") == 0) attack_proc();
    else if (strcmp(attack, "mknod") == 0) attack_mknod();
    else if (strcmp(attack, "setid") == 0) attack_setid();
    else if (strcmp(attack, "xattr") == 0) attack_xattr();
    else if (strcmp(attack, "privileged") == 0) attack_privileged();
    else if (strcmp(attack, "fork_bomb") == 0) attack_fork_bomb(arg0);
    else if (strcmp(attack, "memory_hog") == 0) attack_memory_hog(arg0);
    else if (strcmp(attack, "fill_tmp") == 0) fill("fill_tmp", "/tmp/fill", 1LL << 40);
    else if (strcmp(attack, "fill_work") == 0) fill("fill_work", "/work/fill", 1LL << 40);
    else if (strcmp(attack, "huge_file") == 0) {
        signal(SIGXFSZ, SIG_IGN);
        fill("huge_file", "/tmp/huge", 1LL << 40);
    } else if (strcmp(attack, "huge_file_signal") == 0) fill("huge_file_signal", "/tmp/huge", 1LL << 40);
    else if (strcmp(attack, "daemon") == 0 || strcmp(attack, "setsid_child") == 0 ||
             strcmp(attack, "sigterm_child") == 0 || strcmp(attack, "stdout_grandchild") == 0)
        attack_orphan(attack);
    else if (strcmp(attack, "sleep_forever") == 0) sleep_seconds(1L << 30);
    else if (strcmp(attack, "sleep_ignoring_term") == 0) {
        signal(SIGTERM, SIG_IGN);
        sleep_seconds(1L << 30);
    } else if (strcmp(attack, "outputs") == 0) attack_outputs(arg0 ? arg0 : "");
    else if (strcmp(attack, "write_input") == 0) attack_write_input();
    else if (strcmp(attack, "fds") == 0) attack_fds();
    else if (strcmp(attack, "proc_links") == 0) attack_proc_links(arg0 ? arg0 : "token");
    else if (strcmp(attack, "identity") == 0) attack_identity();
    else {
        report("unknown_attack", -1, EINVAL);
        return 2;
    }
    return 0;
}
