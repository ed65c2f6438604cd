#!/usr/bin/perl
# Net::SIP's RTP relay (Net::SIP::NATHelper::Local) as a benchmark peer of
# bench/run_rtp.py.
#
# Usage: perl bench/relay_netsip.pl [--address 127.0.0.1] [--ports LOW-HIGH]
#                                   [--max-time SECONDS]
#
# It reads lines "STREAM i A_IP A_PORT B_IP B_PORT" on stdin up to "END".
# Each stream is one call, set up the way Net::SIP's StatelessProxy does it
# for an INVITE with SDP and its 200 with SDP:
#   allocate_sockets(side 0, A's media)  -- the INVITE's SDP
#   allocate_sockets(side 1, B's media)  -- the 200's SDP
#   activate_session                      -- as on the ACK
# with one audio stream of range 2 (RTP and RTCP), as Net::SIP::SDP gives for
# RTP/AVP. Side 0's sockets replace A's address in the INVITE, so B sends to
# them; side 1's sockets replace B's address in the 200, so A sends to them.
# It prints "SEND i A_SEND_TO_IP A_SEND_TO_PORT B_SEND_TO_IP B_SEND_TO_PORT"
# per stream, then "READY", and relays on a Net::SIP::Dispatcher::Eventloop
# until SIGTERM or --max-time.
use strict;
use warnings;
use Getopt::Long qw(GetOptions);
use Net::SIP::Dispatcher::Eventloop;
use Net::SIP::NATHelper::Local;
use Net::SIP::Util ();
use Net::SIP ();

my $address  = '127.0.0.1';
my $ports    = '';
my $max_time = 600;
GetOptions('address=s' => \$address, 'ports=s' => \$ports, 'max-time=i' => \$max_time)
    or die "usage: $0 [--address IP] [--ports LOW-HIGH] [--max-time S]\n";

sub loopback { my $ip = shift; $ip =~ m{^127\.\d+\.\d+\.\d+$} or die "refusing non-loopback address '$ip'\n"; $ip }
loopback($address);
if ($ports) {
    my ($low, $high) = $ports =~ m{^(\d+)-(\d+)$} or die "--ports wants LOW-HIGH\n";
    # create_rtp_sockets draws its ports from these two globals
    $Net::SIP::Util::RTP_MIN_PORT = $low;
    $Net::SIP::Util::RTP_MAX_PORT = $high;
}

my $loop   = Net::SIP::Dispatcher::Eventloop->new;
my $helper = Net::SIP::NATHelper::Local->new($loop);

$| = 1;
my @out;
while (my $line = <STDIN>) {
    chomp $line;
    last if $line eq 'END';
    my ($i, $a_ip, $a_port, $b_ip, $b_port) = $line =~ m{^STREAM (\d+) (\S+) (\d+) (\S+) (\d+)$}
        or die "bad line '$line'\n";
    loopback($a_ip); loopback($b_ip);
    # [ call-id, cseq, idfrom, idto, uri_from, uri_to ] as StatelessProxy
    # builds it: the tags plus the incoming/outgoing leg address
    my $basic = [ "bench-call-$i\@relay", 1, "tag=a$i\0$address:5060", "tag=b$i\0$address:5060",
                  "<sip:a$i\@bench>", "<sip:b$i\@bench>" ];
    my $side0 = $helper->allocate_sockets($basic, 0, $address,
        [ { addr => $a_ip, port => $a_port, range => 2, proto => 'RTP/AVP', media => 'audio', fmt => '0' } ])
        or die "allocate_sockets side 0 failed for stream $i: $!\n";
    my $side1 = $helper->allocate_sockets($basic, 1, $address,
        [ { addr => $b_ip, port => $b_port, range => 2, proto => 'RTP/AVP', media => 'audio', fmt => '0' } ])
        or die "allocate_sockets side 1 failed for stream $i: $!\n";
    $helper->activate_session($basic) or die "activate_session failed for stream $i\n";
    # side 1's sockets are advertised to A, side 0's to B
    push @out, sprintf("SEND %d %s %d %s %d", $i, $side1->[0][0], $side1->[0][1], $side0->[0][0], $side0->[0][1]);
}
print "$_\n" for @out;
print "READY perl-$^V Net::SIP-$Net::SIP::VERSION\n";

# the event loop has no signal handling: the handler sets a flag that the
# loop checks between slices of at most one second
my $stop = 0;
$SIG{TERM} = $SIG{INT} = sub { $stop = 1 };
my $deadline = time() + $max_time;
while (!$stop && time() < $deadline) {
    $loop->loop(1, \$stop);
}
exit 0;
