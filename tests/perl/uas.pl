#!/usr/bin/perl
# A Net::SIP user agent that answers one call, echoes its RTP, and exits
# after the caller's BYE. Prints what the tests check:
#   UAS peer-media ADDR PORT      (from the SDP it received)
#   UAS received N packets        (RTP packets that reached it)
# usage: uas.pl IP:PORT [timeout-seconds]
use strict;
use warnings;
use Net::SIP;

$| = 1;
my ($leg, $timeout) = @ARGV;
die "usage: $0 IP:PORT [timeout]\n" unless $leg;
$timeout ||= 20;
my ($host) = split(/:/, $leg);

my $ua = Net::SIP::Simple->new(leg => $leg, from => "sip:uas\@$host");
my ($received, $done) = (0, 0);
$ua->listen(
    init_media     => $ua->rtp('media_recv_echo', sub { $received++ }, 0),
    cb_established => sub {
        my ($status, $call) = @_;
        my $sdp = $call->get_param('sdp_peer');
        for my $m ($sdp ? $sdp->get_media : ()) {
            print "UAS peer-media $m->{addr} $m->{port}\n";
        }
    },
    recv_bye       => sub { $done = 1 },
);
print "UAS ready $leg\n";
$ua->loop($timeout, \$done);
print "UAS received $received packets\n";
print $done ? "UAS done\n" : "UAS timeout\n";
exit($done ? 0 : 1);
