/* A hostile "apt-get" for the sandbox tests: it tries every escape the emulator's sandbox must
 * stop, one line per attempt:
 *   TRY <name> blocked <why>      the sandbox held
 *   TRY <name> ESCAPED <what>     it did not
 * Arguments come from the environment: DOM0_PID (a dom0 process to ptrace and kill),
 * DOM0_MARKER (a dom0 path to create), DENIED_URL_HOST/PORT (a TCP address outside the allowed
 * ones). Built static by the test with `gcc -static`. Exits 100, as apt-get does on errors. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/module.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static int escaped;

static void blocked(const char *name, const char *why) { printf("TRY %s blocked %s\n", name, why); }
static void escape(const char *name, const char *what) {
    printf("TRY %s ESCAPED %s\n", name, what);
    escaped = 1;
}
static void result(const char *name, int rc) {
    if (rc < 0) blocked(name, strerror(errno));
    else escape(name, "call succeeded");
}

/* Prints whatever a "shadow" file holds, so the test can check it is never dom0's. */
static void read_shadow(const char *name, const char *path) {
    char buf[4096];
    int fd = open(path, O_RDONLY);
    if (fd < 0) { blocked(name, strerror(errno)); return; }
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n < 0) { blocked(name, strerror(errno)); return; }
    buf[n] = 0;
    char *nl = strchr(buf, '\n');
    if (nl) *nl = 0;
    printf("SHADOW %s %s\n", path, buf);
    blocked(name, "read the guest's own file (checked by the test)");
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *marker = getenv("DOM0_MARKER");
    const char *dom0_pid = getenv("DOM0_PID");

    /* dom0 filesystem: write a marker at a dom0 path, through every route we know. */
    if (marker) {
        int fd = open(marker, O_WRONLY | O_CREAT, 0644);
        if (fd < 0) blocked("write-dom0-path", strerror(errno));
        else { close(fd); printf("TRY write-dom0-path wrote %s inside the sandbox (test checks dom0)\n", marker); }
        char via[4096];
        snprintf(via, sizeof via, "/proc/1/root%s", marker);
        fd = open(via, O_WRONLY | O_CREAT, 0644);
        if (fd < 0) blocked("write-via-proc1-root", strerror(errno));
        else { close(fd); printf("TRY write-via-proc1-root wrote %s (test checks dom0)\n", via); }
    }
    read_shadow("read-shadow", "/etc/shadow");
    read_shadow("read-shadow-proc1-root", "/proc/1/root/etc/shadow");
    read_shadow("read-shadow-self-root", "/proc/self/root/etc/shadow");
    for (int pid = 1; pid < 64; pid++) {
        char p[64];
        snprintf(p, sizeof p, "/proc/%d/root/etc/shadow", pid);
        int fd = open(p, O_RDONLY);
        if (fd >= 0) { close(fd); read_shadow("read-shadow-proc-pid-root", p); }
    }
    /* chroot escape: needs CAP_SYS_CHROOT and the chroot syscall. */
    mkdir("/tmp/jail", 0700);
    result("chroot", chroot("/tmp/jail"));

    result("mount-tmpfs", mount("none", "/mnt", "tmpfs", 0, NULL));
    result("remount-root-ro", mount(NULL, "/", NULL, MS_REMOUNT | MS_RDONLY, NULL));
    result("umount-proc", umount2("/proc", MNT_DETACH));
    result("new-mount-api", (int)syscall(SYS_fsopen, "tmpfs", 0));
    result("unshare-userns", unshare(CLONE_NEWUSER));
    result("unshare-mountns", unshare(CLONE_NEWNS));

    /* kernel modules */
    result("init_module", (int)syscall(SYS_init_module, "\0\0\0\0", 4, ""));
    int devnull = open("/dev/null", O_RDONLY);
    result("finit_module", (int)syscall(SYS_finit_module, devnull, "", 0));
    result("delete_module", (int)syscall(SYS_delete_module, "loop", O_NONBLOCK));

    /* raw block devices */
    result("mknod-blockdev", mknod("/tmp/sda", S_IFBLK | 0600, makedev(8, 0)));
    result("mknod-blockdev-var", mknod("/var/tmp/loop0", S_IFBLK | 0600, makedev(7, 0)));
    result("open-dev-sda", open("/dev/sda", O_RDONLY));
    result("open-dev-loop0", open("/dev/loop0", O_RDONLY));
    result("open-dev-mem", open("/dev/mem", O_RDONLY));
    result("iopl", (int)syscall(SYS_iopl, 3));

    /* other processes of dom0 */
    if (dom0_pid) {
        pid_t pid = atoi(dom0_pid);
        result("ptrace-dom0", (int)ptrace(PTRACE_ATTACH, pid, 0, 0));
        result("kill-dom0", kill(pid, SIGKILL));
    }
    result("reboot", reboot(RB_POWER_OFF));
    result("sethostname", sethostname("pwned", 5));
    result("write-sys", open("/sys/kernel/notes-dormouse", O_WRONLY | O_CREAT, 0644));

    /* network: an address outside the allowed ones */
    const char *host = getenv("DENIED_HOST");
    const char *port = getenv("DENIED_PORT");
    if (host && port) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(port))};
        inet_pton(AF_INET, host, &a.sin_addr);
        result("connect-denied-address", connect(s, (struct sockaddr *)&a, sizeof a));
        close(s);
    }

    /* network through the dormouse proxy: only the guest's package sources may be reached */
    const char *proxy = getenv("http_proxy");
    const char *colon = proxy ? strrchr(proxy, ':') : NULL;
    if (colon) {
        const char *requests[][2] = {
            {"proxy-connect-elsewhere", "CONNECT 1.1.1.1:443 HTTP/1.1\r\nHost: 1.1.1.1:443\r\n\r\n"},
            {"proxy-connect-dom0-ssh", "CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n"},
            {"proxy-get-elsewhere", "GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n"},
            {"proxy-tunnel-plain-source", "CONNECT deb.debian.org:80 HTTP/1.1\r\nHost: deb.debian.org:80\r\n\r\n"},
        };
        for (unsigned i = 0; i < sizeof requests / sizeof requests[0]; i++) {
            int s = socket(AF_INET, SOCK_STREAM, 0);
            struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(colon + 1))};
            inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
            char reply[256] = {0};
            if (connect(s, (struct sockaddr *)&a, sizeof a) < 0) { blocked(requests[i][0], strerror(errno)); close(s); continue; }
            write(s, requests[i][1], strlen(requests[i][1]));
            /* Read until the status line is complete (TCP may deliver it in pieces). */
            size_t got = 0;
            while (got < sizeof reply - 1 && !strstr(reply, "\r\n")) {
                ssize_t n = read(s, reply + got, sizeof reply - 1 - got);
                if (n <= 0) break;
                got += n;
            }
            close(s);
            char *nl = strchr(reply, '\r');
            if (nl) *nl = 0;
            if (strncmp(reply, "HTTP/1.1 403", 12) == 0) blocked(requests[i][0], reply);
            else escape(requests[i][0], reply);
        }
    }

    /* fork bomb: must hit the sandbox's pids limit */
    int forked = 0;
    for (; forked < 100000; forked++) {
        pid_t c = fork();
        if (c == 0) { pause(); _exit(0); }
        if (c < 0) break;
    }
    char what[128];
    snprintf(what, sizeof what, "fork failed after %d children: %s", forked, strerror(errno));
    if (forked < 100000) blocked("fork-bomb", what);
    else escape("fork-bomb", "forked 100000 children");
    /* Signals to our process group and to every process we can see: in the sandbox's own
     * session and PID namespace these reach only sandbox processes (the test checks dom0's). */
    signal(SIGTERM, SIG_IGN);
    if (kill(0, SIGTERM) == 0) printf("TRY kill-process-group sent (test checks dom0 survived)\n");
    if (kill(-1, SIGKILL) == 0) printf("TRY kill-everything sent (test checks dom0 survived)\n");
    while (waitpid(-1, NULL, 0) > 0) {}

    /* fill the disk: must hit the scratch size limit */
    int fd = open("/var/fill", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    static char block[1 << 20];
    memset(block, 'x', sizeof block);
    long long written = 0;
    for (;;) {
        ssize_t n = write(fd, block, sizeof block);
        if (n <= 0) break;
        written += n;
        if (written > (64LL << 30)) break;
    }
    snprintf(what, sizeof what, "stopped after %lld MiB: %s", written >> 20, strerror(errno));
    if (written <= (64LL << 30)) blocked("fill-disk", what);
    else escape("fill-disk", "wrote 64 GiB");
    close(fd);
    unlink("/var/fill");

    printf("HOSTILE DONE escaped=%d\n", escaped);
    return 100;
}
