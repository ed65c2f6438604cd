#!/usr/bin/perl
# A Net::SIP::Simple user agent with media (not our code under test: the
# peer of tests/test_interop_ua_media.py and bench/ua_media_bench.py).
#
#   --mode answer --leg HOST:PORT [--record FILE] [--play FILE] [--calls N]
#       answers calls (PCMU); records what comes in as Net::SIP raw PCMU
#       (FILE, FILE.2, ...; media_recv_echo without echo, or with --play
#       media_send_recv sending the raw PCMU FILE in a loop); reports each
#       key press Net::SIP's cb_dtmf sees (RFC 2833 and in-band) and waits
#       for the caller's BYE.
#   --mode call --leg HOST:PORT --to URI [--dtmf KEYS --methods rfc2833|audio]
#       [--play FILE] [--hangup-after SECS]
#       calls; sends KEYS with Net::SIP's dtmf() by the given method, or
#       plays FILE (raw PCMU, media_send_recv), then hangs up.
# Every event is a JSON line: ready, incoming, established, dtmf (digit,
# duration), dtmf_done, bye (by peer|us), failed, timeout, done.
use strict;
use warnings;
use Getopt::Long;
use JSON::PP;
use Time::HiRes qw(time);
use Net::SIP;

$| = 1;
my %o = (mode => 'answer', timeout => 30, calls => 1, methods => 'rfc2833', 'hangup-after' => 0.5);
GetOptions(\%o, 'mode=s', 'leg=s', 'to=s', 'record=s', 'play=s', 'dtmf=s', 'methods=s', 'calls=i',
    'timeout=f', 'hangup-after=f') or die "bad options\n";
die "--leg is required\n" if !$o{leg};
my ($host, $port) = $o{leg} =~ m{^\[?([^\]]*?)\]?:(\d+)$} or die "bad --leg $o{leg}\n";

my $json = JSON::PP->new->canonical;
sub emit { my %e = @_; print $json->encode(\%e), "\n" }

my $ua = Net::SIP::Simple->new(leg => { addr => $host, port => $port }, from => "sip:netsip\@$host:$port");
my $deadline = time + $o{timeout};
my $timed_out = 0;

sub run_until {
    my $flag = shift;
    while (!$$flag && time < $deadline) { $ua->loop(0.05, $flag) }
    $timed_out = 1 if !$$flag;
    return $$flag;
}

sub on_dtmf {
    my ($event, $duration) = @_;
    emit(event => 'dtmf', digit => "$event", duration => $duration);
}

emit(event => 'ready', leg => ($ua->{dispatcher}->get_legs)[0]->laddr(2));

if ($o{mode} eq 'answer') {
    my ($ended, $taken) = (0, 0);
    $ua->listen(
        cb_create => sub { my ($call) = @_; emit(event => 'incoming'); 1 },
        cb_established => sub { emit(event => 'established') },
        cb_cleanup => sub { $ended++; emit(event => 'bye', by => 'peer') },
        init_media => sub {
            my ($call, $args) = @_;
            $taken++;
            my $file = $o{record} ? ($taken > 1 ? "$o{record}.$taken" : $o{record}) : undef;
            # with --play: send the raw file for ever and record (media_send_recv);
            # else receive only (delay -1), saving the payload: an answer machine
            my $media = $o{play} ? $ua->rtp('send_recv', $o{play}, -1, $file)
                : $ua->rtp('recv_echo', $file, -1);
            return invoke_media($media, $call, $args);
        },
        cb_dtmf => \&on_dtmf,
    );
    my $all = 0;
    while (time < $deadline && $ended < $o{calls}) { $ua->loop(0.05, \$all) }
    $timed_out = 1 if $ended < $o{calls};
} else {
    my $peer_bye = 0;
    my $media_done = 0;
    my $call = $ua->invite($o{to},
        init_media => $o{play} ? $ua->rtp('send_recv', $o{play}, 1) : $ua->rtp('recv_echo', undef, -1),
        cb_rtp_done => \$media_done,
        cb_dtmf => \&on_dtmf,
        recv_bye => \$peer_bye,
    );
    if (!$call || $call->error) {
        emit(event => 'failed', reason => ($call ? $call->error : $ua->error) // 'invite failed');
        emit(event => 'done', ok => JSON::PP::false);
        exit 1;
    }
    emit(event => 'established');
    if ($o{dtmf}) {
        my $done = 0;
        $call->dtmf($o{dtmf}, methods => $o{methods}, cb_final => \$done);
        run_until(\$done);
        emit(event => 'dtmf_done', methods => $o{methods});
    }
    if ($o{play}) {
        my $either = 0;
        while (!$media_done && !$peer_bye && time < $deadline) { $ua->loop(0.05, \$media_done, \$peer_bye) }
    }
    my $until = time + $o{'hangup-after'};
    my $never = 0;
    $ua->loop(0.05, \$never) while time < $until && !$peer_bye;
    if (!$peer_bye) {
        my $stop = 0;
        $call->bye(cb_final => \$stop);
        run_until(\$stop);
        emit(event => 'bye', by => 'us');
    } else {
        emit(event => 'bye', by => 'peer');
    }
}

sub invoke_media {
    my ($cb, @args) = @_;
    return Net::SIP::Util::invoke_callback($cb, @args);
}

emit(event => 'timeout') if $timed_out;
emit(event => 'done', ok => $timed_out ? JSON::PP::false : JSON::PP::true);
exit($timed_out ? 1 : 0);
