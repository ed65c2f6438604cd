#!/usr/bin/perl
# Net::SIP stateless proxy used as a benchmark peer by bench/run_sip.py.
#
# Usage: perl bench/netsip_proxy.pl [--max-time SECONDS] LEG [LEG ...]
#   LEG is "proto:ip:port", e.g. udp:127.0.0.1:5070 or tcp:127.0.0.1:5070.
#
# It runs in the foreground until SIGTERM/SIGINT or until --max-time has
# passed, so a forgotten process cannot outlive a benchmark for long.
use strict;
use warnings;
use Getopt::Long qw(GetOptions);
use Net::SIP;

my $max_time = 3600;
GetOptions('max-time=i' => \$max_time)
    or die "usage: $0 [--max-time SECONDS] proto:ip:port ...\n";
my @legs = @ARGV or die "usage: $0 [--max-time SECONDS] proto:ip:port ...\n";

# Net::SIP 0.835 does not accept "proto:ip:port" strings as its manual says
# (it wants SIP URIs), so the legs are built from explicit arguments.
my @leg_args;
for my $leg (@legs) {
    # The benchmark only ever runs on loopback; refuse anything else.
    my ($proto, $addr, $port) =
        $leg =~ m{^(udp|tcp):(127\.\d+\.\d+\.\d+|\[::1\]):(\d+)$}
        or die "refusing leg '$leg': only udp|tcp on loopback is allowed\n";
    $addr =~ s/^\[(.*)\]$/$1/;
    push @leg_args, { proto => $proto, addr => $addr, port => $port };
}

my $ua = Net::SIP::Simple->new(legs => \@leg_args);
$ua->create_stateless_proxy;

# Net::SIP's event loop has no signal handling of its own: the handlers only
# set a flag, and the loop runs in short slices so the flag is seen promptly.
my $stop = 0;
$SIG{TERM} = $SIG{INT} = sub { $stop = 1 };

$| = 1;
print "netsip_proxy: listening on @legs (pid $$)\n";
my $deadline = time() + $max_time;
while (!$stop && time() < $deadline) {
    $ua->loop(1, \$stop);
}
print "netsip_proxy: exiting\n";
exit 0;
