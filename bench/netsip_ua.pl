#!/usr/bin/perl
# The Net::SIP::Simple side of bench/ua_bench.py: a user agent that makes or
# answers many calls without media, so the bench measures what the SIP
# stack costs per call.
#
#   netsip_ua.pl --mode answer --leg IP:PORT [--max-time S]
#       answers every INVITE at once (Simple's listen); the caller hangs up
#   netsip_ua.pl --mode call --leg IP:PORT --to URI --rate R --calls N
#                [--warmup W] [--warmup-rate R2] [--max-time S]
#       starts W warm-up calls (R2 per second, default R), then N measured
#       calls, R per second; each call hangs up (BYE) as soon as it is
#       established; a call not ended 10 s after the phase's last call
#       started counts as failed
#
# One JSON object per line on stdout:
#   {"event":"ready"}
#   {"event":"phase","phase":"warmup"|"measure","started":N}   (caller)
#   {"event":"phase_done","phase":...,"ok":N,"failed":M,"seconds":S}
#   {"event":"stats","answered":N,"byes":M}    (answer, every second)
# The harness reads /proc/PID/stat at the phase lines for the CPU figures.
use strict;
use warnings;
use Getopt::Long;
use Time::HiRes qw(time);
use Net::SIP;

$| = 1;
my %o = (mode => 'answer', rate => 10, calls => 100, warmup => 0, 'max-time' => 600);
GetOptions(\%o, 'mode=s', 'leg=s', 'to=s', 'rate=f', 'calls=i', 'warmup=i', 'warmup-rate=f', 'max-time=f')
    or die "bad options\n";
my ($proto, $host, $port) = ($o{leg} || '') =~ m{^(?:(udp|tcp):)?\[?([^\]]*?)\]?:(\d+)$}
    or die "--leg [udp:|tcp:]HOST:PORT is required\n";
my $hostport = $host =~ /:/ ? "[$host]:$port" : "$host:$port";

my $ua = Net::SIP::Simple->new(
    leg => { proto => $proto || 'udp', addr => $host, port => $port },
    from => "sip:netsip-bench\@$hostport",
);
my $stop = 0;
$SIG{TERM} = $SIG{INT} = sub { $stop = 1 };
my $end = time + $o{'max-time'};

sub line { my %e = @_; print '{' . join(',', map { my $v = $e{$_}; $v = "\"$v\"" if $v !~ /^-?[\d.]+$/; "\"$_\":$v" } sort keys %e) . "}\n" }

line(event => 'ready');

if ($o{mode} eq 'answer') {
    my ($answered, $byes) = (0, 0);
    $ua->listen(
        cb_established => sub { $answered++ },
        recv_bye => sub { $byes++ },
    );
    my $next_report = time + 1;
    while (!$stop && time < $end) {
        $ua->loop(0.2, \$stop);
        if (time >= $next_report) {
            line(event => 'stats', answered => $answered, byes => $byes);
            $next_report = time + 1;
        }
    }
    line(event => 'stats', answered => $answered, byes => $byes);
} elsif ($o{mode} eq 'call') {
    die "--to is required\n" if !$o{to};
    my $warmup_rate = $o{'warmup-rate'} || $o{rate};
    for my $phase ($o{warmup} ? ['warmup', $o{warmup}, $warmup_rate] : (), ['measure', $o{calls}, $o{rate}]) {
        my ($name, $count, $rate) = @$phase;
        my ($started, $ok, $failed, $open) = (0, 0, 0, 0);
        my %calls;
        my $t0 = time;
        line(event => 'phase', phase => $name, started => 0);
        my $start_call = sub {
            my $n = $started++;
            $open++;
            my $call;
            $call = $ua->invite($o{to},
                cb_final => sub {
                    my ($status, $c) = @_;
                    if ($status eq 'OK') {
                        # cb_final runs before Net::SIP sends the ACK: hang up
                        # from a timer so the BYE does not overtake the ACK
                        $ua->add_timer(0, sub {
                            $c->bye(cb_final => sub { $ok++; $open--; delete $calls{$n} });
                        });
                    } else {
                        my (undef, undef, %info) = @_;
                        print STDERR "call $n failed: ", ($info{code} || $info{errno} || "?"), "\n" if $failed < 5;
                        $failed++; $open--; delete $calls{$n};
                    }
                },
            );
            $calls{$n} = $call;    # keep the call alive until it ended
        };
        # pace by deadline: call k starts at t0 + k/rate; a call not ended
        # GRACE seconds after the last one started counts as failed (Net::SIP
        # sometimes never reports the end of one call, which would hold the
        # phase until --max-time)
        my $grace = 10;
        while (!$stop && time < $end
               && ($started < $count || ($open > 0 && time < $t0 + $count / $rate + $grace))) {
            while ($started < $count && time >= $t0 + $started / $rate) { $start_call->() }
            my $wait = $started < $count ? $t0 + $started / $rate - time : 0.05;
            $wait = 0.001 if $wait < 0.001;
            $ua->loop($wait, \$stop);
        }
        line(event => 'phase_done', phase => $name, ok => $ok, failed => $failed + $open,
            seconds => sprintf('%.3f', time - $t0));
        last if $stop || time >= $end;
    }
} else {
    die "unknown --mode $o{mode}\n";
}
line(event => 'done');
