/*
 * An address block ("10.0.0.0/8", "2001:db8::/32"). Types only; cidr.h has
 * the functions. Every address is kept in IPv6 form, IPv4 ones as
 * IPv4-mapped (::ffff:a.b.c.d), so one comparison serves both families and a
 * client reaching a dual-stack socket as ::ffff:10.1.2.3 matches 10.0.0.0/8.
 */
#ifndef MG_NET_CIDR_T_H
#define MG_NET_CIDR_T_H

#include <stdint.h>

struct mg_ip {
    uint8_t b[16]; /* network order; IPv4 as ::ffff:a.b.c.d */
};

struct mg_cidr {
    struct mg_ip net; /* host bits zero */
    uint8_t bits;     /* prefix length over the 128 bits (IPv4 /n is 96 + n) */
};

#endif
