/* spawn: the zygote's fork of one spare, with the spare's whole set-up done in C before it
 * runs its first line of Python again (see spawn.py for why).
 *
 * spawn_spare() makes the four pipes (job, result, stdout, stderr) and forks. In the parent it
 * closes the child's ends, makes the result/stdout/stderr read ends non-blocking and returns
 * the child's pid with the parent's ends in ends[0..3]. In the child, before returning 0, it:
 * resets the zygote's signal handlers; becomes a session leader; arms PDEATHSIG (and checks
 * the parent did not die before that); puts /dev/null on fd 0, the stdout/stderr pipes on 1
 * and 2, the job and result pipes on 3 and 4 (close-on-exec); closes every other fd; attaches
 * the seccomp layer `filter` (raw BPF, bound to its own pid, as isolation.load_seccomp does); makes the scratch
 * directory (0700) with exports/charts in it and enters it. A failure there writes one line
 * to fd 2 and _exit()s with `failed_code`.
 * Called through ctypes.PyDLL with the GIL held, by a single-threaded process, like fork().
 * Build: cc -O2 -shared -fPIC -o _spawn.so spawn.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define JOB_FD 3
#define RESULT_FD 4
#define HIGH_FD 16  /* where the child parks its five fds before putting them in place */

static void put(const char *text) {
    size_t len = strlen(text);
    while (len > 0) {
        ssize_t done = write(2, text, len);
        if (done < 0 && errno == EINTR) continue;
        if (done <= 0) return;
        text += done;
        len -= (size_t)done;
    }
}

static void die(const char *step, int failed_code) {
    int err = errno;
    put("spare set-up failed: ");
    put(step);
    put(": ");
    put(strerror(err));
    put("\n");
    _exit(failed_code);
}

/* The session layer names the spare's own pid by this placeholder (isolation.OWN_PID_PLACEHOLDER):
 * the spare writes its pid (and -pid) there in its own copy before attaching it. */
#define OWN_PID_PLACEHOLDER 0x7ABCDE01u

static void bind_own_pid(struct sock_filter *prog, long count) {
    __u32 pid = (__u32)getpid();
    for (long i = 0; i < count; i++) {
        if (BPF_CLASS(prog[i].code) == BPF_RET) continue;
        if (prog[i].k == OWN_PID_PLACEHOLDER) prog[i].k = pid;
        else if (prog[i].k == (__u32)0 - OWN_PID_PLACEHOLDER) prog[i].k = (__u32)0 - pid;
    }
}

static void close_from(int low) {
#ifdef SYS_close_range
    if (syscall(SYS_close_range, (unsigned)low, ~0U, 0) == 0) return;
#endif
    long max = sysconf(_SC_OPEN_MAX);
    if (max < 0 || max > (1 << 20)) max = 1 << 20;
    for (int fd = low; fd < max; fd++) close(fd);
}

static void child_setup(int job_r, int result_w, int out_w, int err_w, const char *scratch,
                        const char *exports, const char *charts, const unsigned char *filter,
                        long filter_len, int parent_pid, int failed_code) {
    /* The zygote's handlers (child.default_signals resets the same ones in Python next): until
     * then a signal must not run them, nor write to the zygote's wake-up fd number, which fd 3
     * or 4 may be about to take. */
    static const int reset[] = {SIGCHLD, SIGTERM, SIGINT, SIGHUP, SIGUSR1};
    struct sigaction dfl;
    memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    for (size_t i = 0; i < sizeof(reset) / sizeof(reset[0]); i++) sigaction(reset[i], &dfl, NULL);
    if (setsid() < 0) die("setsid", failed_code);
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) die("PR_SET_PDEATHSIG", failed_code);
    if (getppid() != parent_pid) _exit(failed_code);  /* the parent died before PDEATHSIG */
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (devnull < 0) die("/dev/null", failed_code);
    /* Park all five above any number they go to, then put each in its place. */
    int sources[5] = {devnull, out_w, err_w, job_r, result_w};
    int parked[5];
    for (int i = 0; i < 5; i++) {
        parked[i] = fcntl(sources[i], F_DUPFD_CLOEXEC, HIGH_FD);
        if (parked[i] < 0) die("F_DUPFD", failed_code);
    }
    for (int i = 0; i < 5; i++) {
        /* 0-2 inheritable, as stdio is; the job and result pipes close on exec */
        if (dup3(parked[i], i, i < 3 ? 0 : O_CLOEXEC) < 0) die("dup3", failed_code);
    }
    close_from(RESULT_FD + 1);
    if (filter_len > 0) {
        struct sock_fprog prog = {(unsigned short)(filter_len / 8), (struct sock_filter *)filter};
        bind_own_pid(prog.filter, filter_len / 8);  /* this process's copy of the zygote's buffer */
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) die("PR_SET_NO_NEW_PRIVS", failed_code);
        if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) != 0) die("seccomp", failed_code);
    }
    if (mkdir(scratch, 0700) != 0) die("scratch directory", failed_code);
    if (mkdir(exports, 0777) != 0 || mkdir(charts, 0777) != 0) die("exports/charts", failed_code);
    if (chdir(scratch) != 0) die("chdir", failed_code);
}

/* Returns the child's pid in the parent (ends: job_w, result_r, out_r, err_r), 0 in the child,
 * or -errno when no child was made (nothing is left open then). */
long spawn_spare(int *ends, const char *scratch, const char *exports, const char *charts,
                 const unsigned char *filter, long filter_len, int parent_pid, int failed_code) {
    int fds[8];
    int made = 0;
    for (; made < 8; made += 2) {
        if (pipe2(fds + made, O_CLOEXEC) != 0) {
            int err = errno;
            for (int i = 0; i < made; i++) close(fds[i]);
            return -err;
        }
    }
    /* fds: job_r job_w result_r result_w out_r out_w err_r err_w */
    pid_t pid = fork();
    if (pid < 0) {
        int err = errno;
        for (int i = 0; i < 8; i++) close(fds[i]);
        return -err;
    }
    if (pid == 0) {
        child_setup(fds[0], fds[3], fds[5], fds[7], scratch, exports, charts, filter, filter_len,
                    parent_pid, failed_code);
        return 0;  /* the job pipe is JOB_FD, the result pipe RESULT_FD (spawn.py knows) */
    }
    close(fds[0]);
    close(fds[3]);
    close(fds[5]);
    close(fds[7]);
    for (int i = 2; i < 8; i += 2) fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
    ends[0] = fds[1];
    ends[1] = fds[2];
    ends[2] = fds[4];
    ends[3] = fds[6];
    return pid;
}
