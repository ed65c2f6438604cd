#!/usr/bin/perl
# A phone for the interop tests, built on Net::SIP::Simple (not our code):
# it registers (with digest authentication) through sipproxy, then either
# waits for a call (--mode callee) or calls --to (--mode caller). Both ends
# send --packets RTP packets and count what arrives. One line per event on
# stdout, so the test can follow along:
#   REGISTERED expires=N | REGISTER FAILED code=N | LISTENING | INCOMING INVITE
#   ESTABLISHED | CALL FAILED code=N | BYE received | BYE done
#   RTP sent=N received=M
# Exit 0 when the run went as asked, 1 otherwise.
use strict;
use warnings;
use Getopt::Long;
use Net::SIP;

$| = 1;
my %o = (mode => 'callee', packets => 50, timeout => 20, expires => 300);
GetOptions(\%o, 'mode=s', 'proxy=s', 'leg=s', 'from=s', 'to=s', 'user=s',
    'password=s', 'packets=i', 'timeout=i', 'expires=i', 'no-register')
    or die "bad options\n";
for (qw(proxy leg from)) { die "--$_ is required\n" if !$o{$_} }

my $ua = Net::SIP::Simple->new(
    from => $o{from},
    leg => $o{leg},
    outgoing_proxy => $o{proxy},
    registrar => $o{proxy},
    $o{user} ? (auth => [$o{user}, $o{password}]) : (),
);

my $stop;
$ua->add_timer($o{timeout}, sub { print "TIMEOUT\n"; $stop = 'timeout' });

if (!$o{'no-register'}) {
    my $done;
    $ua->register(expires => $o{expires}, cb_final => sub {
        my ($status, %info) = @_;
        if ($status eq 'OK') {
            print "REGISTERED expires=$info{expires}\n";
            $done = 'ok';
        } else {
            my $code = $info{code} || ($info{packet} ? $info{packet}->code : 0) || 0;
            print "REGISTER FAILED code=$code\n";
            $done = 'fail';
        }
    });
    $ua->loop(\$done, \$stop);
    exit 1 if !$done || $done ne 'ok';
}

# RTP: send --packets packets of 160 bytes, count what comes back
my ($sent, $received) = (0, 0);
my $sender = sub {
    return if $sent >= $o{packets};
    $sent++;
    return chr(0x55) x 160;
};
my $counter = sub { $received++ };
my $report = sub { print "RTP sent=$sent received=$received\n" };

if ($o{mode} eq 'callee') {
    my ($bye, $established);
    $ua->listen(
        filter => sub { my ($from, $request) = @_; print "INCOMING " . $request->method . "\n"; 1 },
        init_media => $ua->rtp('send_recv', $sender, 1, $counter),
        cb_rtp_done => sub { },  # stay in the call when our packets are out
        cb_established => sub { print "ESTABLISHED\n"; $established = 1 },
        recv_bye => \$bye,
    );
    print "LISTENING\n";
    $ua->loop(\$bye, \$stop);
    print "BYE received\n" if $bye;
    $report->();
    exit(($bye && $received > 0 && $sent > 0) ? 0 : 1);
}

die "--to is required for --mode caller\n" if !$o{to};
my $rtp_done;
my $call = $ua->invite($o{to},
    init_media => $ua->rtp('send_recv', $sender, 1, $counter),
    cb_rtp_done => sub { $rtp_done = 1 },
    cb_final => sub {
        my ($status, $call, %info) = @_;
        if ($status eq 'OK') {
            print "ESTABLISHED\n";
        } else {
            my $code = $info{code} || 0;
            print "CALL FAILED code=$code\n";
            $stop = 'failed';
        }
    },
);
if (!$call) {
    print "CALL FAILED code=0 error=" . ($ua->error || '') . "\n";
    exit 1;
}
# wait until our packets are out and most of the peer's have arrived
my $enough;
my $check = $ua->add_timer(0.1, sub {
    $enough = 1 if $rtp_done && $received >= $o{packets} * 0.8;
}, 0.1);
$ua->loop(\$enough, \$stop);
$check->cancel;
my $bye_done;
if ($enough) {
    # Net::SIP calls this on the final answer (or a timeout) of the BYE
    $call->bye(cb_final => sub { $bye_done = 1 });
    $ua->loop(\$bye_done, \$stop);
    print "BYE done\n" if $bye_done;
}
$report->();
exit(($enough && $bye_done && $received > 0) ? 0 : 1);
