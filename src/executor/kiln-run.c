/*
 * kiln-run: starts one RUN step inside the stage container, as the executor's child.
 *
 * Node can set uid and gid but not supplementary groups, mounts or capabilities, so this small static
 * program does what runc does for a container process, in a mount namespace of the step's own:
 *   --bind SRC DST ro|rw   bind mounts (secrets, caches, bind mounts from the context or a stage)
 *   --tmpfs DST SIZE       a tmpfs (SIZE 0: the kernel's default)
 *   --hide PATH            unmounted for the step: kiln's runtime, workspace and secret store
 *   --root DIR             the step's root (chroot; "/" inside the stage container)
 *   --uid U --gid G --groups G1,G2 --cwd DIR
 * then keeps only Docker's default capabilities (none for a non-root user) and executes ARGV with the
 * environment it was given, searching ARGV[0] in that environment's PATH. Mounts vanish with the
 * namespace when the step ends; nothing it mounted is visible to the executor or its snapshot.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <grp.h>
#include <linux/capability.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

extern char **environ;

/* moby oci/caps/defaults.go */
static const int docker_caps[] = {
    CAP_CHOWN,  CAP_DAC_OVERRIDE, CAP_FSETID,           CAP_FOWNER,     CAP_MKNOD,
    CAP_NET_RAW, CAP_SETGID,      CAP_SETUID,           CAP_SETFCAP,    CAP_SETPCAP,
    CAP_NET_BIND_SERVICE,         CAP_SYS_CHROOT,       CAP_KILL,       CAP_AUDIT_WRITE,
};

static void die(const char *what, const char *arg) {
  fprintf(stderr, "kiln-run: %s %s: %s\n", what, arg, strerror(errno));
  exit(125);
}

static int is_docker_cap(int cap) {
  for (size_t i = 0; i < sizeof docker_caps / sizeof docker_caps[0]; i++)
    if (docker_caps[i] == cap) return 1;
  return 0;
}

/* Docker's set; setuid to a non-root user then clears the permitted and effective sets, as for Docker. */
static void limit_capabilities(void) {
  for (int cap = 0; cap <= 63; cap++) {
    if (is_docker_cap(cap)) continue;
    if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL) die("drop capability", "");
  }
  struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct data[2];
  memset(data, 0, sizeof data);
  for (size_t i = 0; i < sizeof docker_caps / sizeof docker_caps[0]; i++) {
    int cap = docker_caps[i];
    data[cap / 32].effective |= 1u << (cap % 32);
    data[cap / 32].permitted |= 1u << (cap % 32);
  }
  if (syscall(SYS_capset, &hdr, data) != 0) die("capset", "");
}

static unsigned long number(const char *s, const char *flag) {
  char *end;
  errno = 0;
  unsigned long n = strtoul(s, &end, 10);
  if (errno != 0 || *end != '\0' || end == s) {
    fprintf(stderr, "kiln-run: %s %s: not a number\n", flag, s);
    exit(125);
  }
  return n;
}

int main(int argc, char **argv) {
  uid_t uid = 0;
  gid_t gid = 0;
  gid_t groups[64];
  size_t ngroups = 0;
  const char *cwd = "/";
  const char *root = "/";
  const char *hide[16];
  size_t nhide = 0;
  int i = 1;
  if (unshare(CLONE_NEWNS) != 0) die("unshare", "mount namespace");
  if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) die("make private", "/");
  for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
    const char *flag = argv[i];
    if (strcmp(flag, "--bind") == 0 && i + 3 < argc) {
      const char *src = argv[++i], *dst = argv[++i], *mode = argv[++i];
      if (mount(src, dst, NULL, MS_BIND | MS_REC, NULL) != 0) die("bind", dst);
      if (strcmp(mode, "ro") == 0 &&
          mount(NULL, dst, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) != 0)
        die("read-only", dst);
    } else if (strcmp(flag, "--tmpfs") == 0 && i + 2 < argc) {
      const char *dst = argv[++i];
      unsigned long size = number(argv[++i], flag);
      char opts[64];
      if (size > 0) snprintf(opts, sizeof opts, "mode=1777,size=%lu", size);
      else snprintf(opts, sizeof opts, "mode=1777");
      if (mount("tmpfs", dst, "tmpfs", MS_NOSUID | MS_NODEV, opts) != 0) die("tmpfs", dst);
    } else if (strcmp(flag, "--hide") == 0 && i + 1 < argc && nhide < 16) {
      hide[nhide++] = argv[++i];
    } else if (strcmp(flag, "--uid") == 0 && i + 1 < argc) {
      uid = (uid_t)number(argv[++i], flag);
    } else if (strcmp(flag, "--gid") == 0 && i + 1 < argc) {
      gid = (gid_t)number(argv[++i], flag);
    } else if (strcmp(flag, "--groups") == 0 && i + 1 < argc) {
      char *list = argv[++i];
      for (char *g = strtok(list, ","); g != NULL && ngroups < 64; g = strtok(NULL, ","))
        groups[ngroups++] = (gid_t)number(g, flag);
    } else if (strcmp(flag, "--root") == 0 && i + 1 < argc) {
      root = argv[++i];
    } else if (strcmp(flag, "--cwd") == 0 && i + 1 < argc) {
      cwd = argv[++i];
    } else {
      fprintf(stderr, "kiln-run: unknown or incomplete option %s\n", flag);
      return 125;
    }
  }
  if (i + 1 >= argc) {
    fprintf(stderr, "kiln-run: no command after --\n");
    return 125;
  }
  /* Hidden after the binds, whose sources may live below them. */
  for (size_t h = 0; h < nhide; h++)
    if (umount2(hide[h], MNT_DETACH) != 0 && errno != EINVAL && errno != ENOENT) die("hide", hide[h]);
  if (strcmp(root, "/") != 0 && chroot(root) != 0) die("chroot", root);
  if (setgroups(ngroups, groups) != 0) die("setgroups", "");
  limit_capabilities();
  if (setgid(gid) != 0) die("setgid", "");
  if (setuid(uid) != 0) die("setuid", "");
  if (chdir(cwd) != 0) die("chdir", cwd);
  char **cmd = &argv[i + 1];
  execvp(cmd[0], cmd);
  int err = errno;
  fprintf(stderr, "kiln-run: exec %s: %s\n", cmd[0], strerror(err));
  return err == ENOENT ? 127 : 126;
}
