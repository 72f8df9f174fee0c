/* The sandbox ("pause") process of the testbed's real-kubelet node: PID 1 of each pod's sandbox.
 * It only has to live until the runtime stops it, exit cleanly on SIGINT/SIGTERM, and reap the
 * orphans that a shared PID namespace hands to it. Written for this repository; built -static so
 * its image needs no libc (testbed/kubelet/images.py). */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_stop(int sig) {
    (void)sig;
    _exit(0);
}

static void on_child(int sig) {
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

int main(void) {
    struct sigaction stop = {0}, child = {0};
    stop.sa_handler = on_stop;
    child.sa_handler = on_child;
    child.sa_flags = SA_NOCLDSTOP | SA_RESTART;
    sigaction(SIGINT, &stop, NULL);
    sigaction(SIGTERM, &stop, NULL);
    sigaction(SIGCHLD, &child, NULL);
    if (getpid() != 1) {
        /* still useful outside a PID namespace (a test), but say that it is not the usual place */
        (void)write(2, "pause: not PID 1\n", 17);
    }
    for (;;) {
        pause();
    }
    return 0;
}
