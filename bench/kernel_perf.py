#!/usr/bin/env python3
"""Summary of bench/kernel_perf.sh's perf data: kernel_perf.py DIR N NAME...

DIR holds NAME-ROUND.perf files (perf record -e cpu-clock -c 100000 of one
proxy process while it served N requests). Per NAME: medians over rounds of
CPU us/request, its kernel and user parts and the socket-call entry layer;
then the functions (all, then kernel only) whose us/request differ most
between the first two NAMEs, summed over rounds.
"""
import collections
import glob
import re
import statistics
import subprocess
import sys

out, n, names = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
LAYER = set('''vfs_read vfs_write ksys_read ksys_write do_writev vfs_writev rw_verify_area fdget_pos __fdget_pos fdget
 __f_unlock_pos __x64_sys_read __x64_sys_write __x64_sys_writev sock_read_iter sock_write_iter __fsnotify_parent
 fsnotify security_file_permission file_has_perm fput import_iovec __import_iovec iovec_from_user sock_recvmsg
 sock_sendmsg __sock_sendmsg security_socket_recvmsg security_socket_sendmsg __sys_recvfrom __x64_sys_recvfrom
 __sys_sendto __x64_sys_sendto __sys_sendmsg ___sys_sendmsg ____sys_sendmsg __x64_sys_sendmsg sockfd_lookup_light
 copy_msghdr_from_user __copy_msghdr sendmsg_copy_msghdr move_addr_to_kernel'''.split())


def us(samples):
    """us per request: one sample is 100 us of CPU."""
    return samples * 100.0 / n


def load(f):
    rep = subprocess.run(['perf', 'report', '-i', f, '--sort', 'sym', '--stdio', '--show-nr-samples'],
                         capture_output=True, text=True).stdout
    d = collections.Counter()
    for line in rep.splitlines():
        m = re.match(r'\s*[\d.]+%\s+(\d+)\s+\[(.)\]\s+(\S+)', line)
        if m:
            d[(m.group(2), m.group(3))] += int(m.group(1))
    return d


sums = {}
print(f"{'variant':10} {'cpu us/req':>10} {'kernel':>7} {'user':>6} {'entry layer':>11} {'% of cpu':>8}   (medians; under perf, loaded)")
for name in names:
    rows, tot = [], collections.Counter()
    files = sorted(glob.glob(f'{out}/{name}-*.perf'))
    for f in files:
        d = load(f); tot.update(d)
        t = sum(d.values()); k = sum(x for (m, s), x in d.items() if m == 'k')
        lay = sum(x for (m, s), x in d.items() if m == 'k' and (s in LAYER or 'fsnotify' in s))
        rows.append((us(t), us(k), us(t - k), us(lay), 100.0 * lay / t))
    sums[name] = (tot, len(files))
    med = [statistics.median(r[i] for r in rows) for i in range(5)]
    print(f"{name:10} {med[0]:10.2f} {med[1]:7.2f} {med[2]:6.2f} {med[3]:11.2f} {med[4]:8.2f}")
if len(names) >= 2:
    (a, na), (b, nb) = sums[names[0]], sums[names[1]]
    print(f"\nfunctions, us/request (sum over rounds): {names[0]} - {names[1]}")
    keys = sorted(set(a) | set(b), key=lambda k: -abs(us(a[k]) / na - us(b[k]) / nb))
    for k in keys[:25]:
        print(f"  [{k[0]}] {k[1]:38} {us(a[k]) / na:7.3f} {us(b[k]) / nb:7.3f} {us(a[k]) / na - us(b[k]) / nb:+7.3f}")
    print(f"\nkernel functions only: {names[0]} - {names[1]}")
    for k in [k for k in keys if k[0] == 'k'][:25]:
        print(f"  {k[1]:42} {us(a[k]) / na:7.3f} {us(b[k]) / nb:7.3f} {us(a[k]) / na - us(b[k]) / nb:+7.3f}")
