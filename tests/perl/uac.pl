#!/usr/bin/perl
# A Net::SIP user agent that calls TO through PROXY, sends PACKETS RTP
# packets (20 ms apart), counts the echoes coming back, then hangs up.
# Prints what the tests check:
#   UAC peer-media ADDR PORT      (from the SDP of the answer)
#   UAC sent N packets
#   UAC received M packets
#   UAC final CODE                (when the INVITE failed)
# usage: uac.pl IP:PORT PROXY-IP:PORT TO-URI PACKETS [timeout-seconds]
use strict;
use warnings;
use Net::SIP;
use Time::HiRes qw(time);

$| = 1;
my ($leg, $proxy, $to, $packets, $timeout) = @ARGV;
die "usage: $0 IP:PORT PROXY TO PACKETS [timeout]\n" unless $packets;
$timeout ||= 20;
my ($host) = split(/:/, $leg);

my $ua = Net::SIP::Simple->new(leg => $leg, outgoing_proxy => $proxy, from => "sip:uac\@$host");
my ($sent, $received, $done, $failed, $rtp_done, $bye_sent) = (0, 0, 0, undef, undef, 0);
my $payload = "\xd5" x 160;
my $call;
$call = $ua->invite($to,
    init_media  => $ua->rtp('media_send_recv',
        sub { return if $sent >= $packets; $sent++; return $payload },
        1,
        sub { $received++ }),
    cb_rtp_done => sub { $rtp_done = time },
    cb_final    => sub {
        my ($status, $self, %info) = @_;
        if ($status eq 'OK') {
            my $sdp = $self->get_param('sdp_peer');
            for my $m ($sdp ? $sdp->get_media : ()) {
                print "UAC peer-media $m->{addr} $m->{port}\n";
            }
        } else {
            $failed = $info{code} || 'none';
            $done = 1;
        }
    },
) or die "invite failed: " . ($ua->error || 'unknown') . "\n";
# Short loop slices: a timer added from inside an RTP callback is only
# noticed at the next event, and after the last packet there may be none.
my $deadline = time + $timeout;
while (!$done && time < $deadline) {
    $ua->loop(0.05, \$done);
    if ($rtp_done && !$bye_sent && time > $rtp_done + 0.5) {  # let the last echoes come back
        $bye_sent = 1;
        $call->bye(cb_final => sub { $done = 1 });
    }
}
print "UAC final $failed\n" if defined $failed;
print "UAC sent $sent packets\n";
print "UAC received $received packets\n";
print $done ? "UAC done\n" : "UAC timeout\n";
exit($done && !defined $failed ? 0 : 1);
