#!/usr/bin/perl
# A Net::SIP::Simple user agent (not our code) that the interop tests drive
# against sipproxy's UA. It calls (--mode call --to URI), answers
# (--mode answer), or sends one out-of-dialog MESSAGE (--mode message
# --to URI --text TEXT). Once a call is established it runs --do, a
# comma-separated script of steps, in order:
#   sleep:SECS      wait
#   hold            re-INVITE putting the call on hold (Net::SIP's
#                   call_on_hold: c=0.0.0.0)
#   unhold          re-INVITE with the normal SDP again
#   message:TEXT    in-dialog MESSAGE
#   bye             hang up (the run ends when the BYE is answered)
#   waitbye         wait for the peer's BYE (the run ends there)
#   waitreinvite    wait until the peer re-INVITEd us
#   waitmessage     wait until a MESSAGE arrived (in or out of dialog)
# In answer mode --calls N answers N calls one after the other (each runs
# --do); --ring SECS delays the answer.
#
# Every event is one JSON object per line on stdout, e.g.
#   {"event":"ready","leg":"127.0.0.1:5070"}
#   {"event":"incoming","from":"..."}  {"event":"established","call_id":"..."}
#   {"event":"reinvite","hold":1}      {"event":"hold","code":200}
#   {"event":"message","in_dialog":1,"body":"hi"}
#   {"event":"message_sent","code":200,"in_dialog":0}
#   {"event":"bye","by":"peer"}        {"event":"bye","by":"us","code":200}
#   {"event":"failed","code":486}      {"event":"timeout"}  {"event":"done"}
# Exit 0 when every step happened, 1 otherwise.
use strict;
use warnings;
use Getopt::Long;
use JSON::PP;
use Time::HiRes qw(time);
use Net::SIP;
use Net::SIP::Util qw(invoke_callback);

$| = 1;
my %o = (mode => 'answer', timeout => 20, calls => 1, do => '', ring => 0);
GetOptions(\%o, 'mode=s', 'leg=s', 'to=s', 'from=s', 'proxy=s', 'text=s', 'do=s',
    'calls=i', 'ring=f', 'timeout=f') or die "bad options\n";
die "--leg is required\n" if !$o{leg};

my $json = JSON::PP->new->canonical;
sub emit { my %e = @_; print $json->encode(\%e), "\n" }

# --leg [udp:|tcp:]HOST:PORT, HOST may be [v6]
my ($proto, $host, $port) = $o{leg} =~ m{^(?:(udp|tcp):)?\[?([^\]]*?)\]?:(\d+)$}
    or die "bad --leg $o{leg}\n";
$proto ||= 'udp';
my $hostport = $host =~ /:/ ? "[$host]:$port" : "$host:$port";
my $from = $o{from} || "sip:netsip\@$hostport";

my $ua = Net::SIP::Simple->new(
    leg => { proto => $proto, addr => $host, port => $port },
    from => $from,
    $o{proxy} ? (outgoing_proxy => $o{proxy}) : (),
);

my $deadline = time + $o{timeout};
my $failed = 0;
my ($got_bye, $got_reinvite, $got_message) = (0, 0, 0);

# Net::SIP::Simple::Call answers no MESSAGE inside a dialog, and its
# listener drops requests other than INVITE and OPTIONS without an
# answer: wrap both so MESSAGE gets a 200 and is reported.
sub answer_message {
    my ($endpoint, $ctx, $packet, $leg, $from, $in_dialog) = @_;
    emit(event => 'message', in_dialog => $in_dialog ? 1 : 0, body => scalar(($packet->as_parts)[3]),
        from => scalar($packet->get_header('from')));
    $got_message++;
    $endpoint->new_response($ctx, $packet->create_response('200', 'OK'), $leg, $from);
}
{
    no warnings 'redefine';
    my $receive = \&Net::SIP::Simple::Call::receive;
    *Net::SIP::Simple::Call::receive = sub {
        my ($call, $endpoint, $ctx, $error, $code, $packet, $leg, $from) = @_;
        if ($packet && $packet->is_request) {
            my $method = $packet->method;
            if ($method eq 'MESSAGE') {
                answer_message($endpoint, $ctx, $packet, $leg, $from, 1);
                return;
            }
            if ($method eq 'INVITE' && $call->{param}{_established}) {
                my $sdp = eval { $packet->sdp_body };
                my $hold = $sdp && grep { $_->{addr} eq '0.0.0.0' } $sdp->get_media;
                my $body = ($packet->as_parts)[3] // '';
                $hold ||= $body =~ /^a=(sendonly|inactive)\r?$/m ? 1 : 0;
                emit(event => 'reinvite', hold => $hold ? 1 : 0);
                $got_reinvite++;
            }
            $got_bye++ if $method eq 'BYE';
        }
        goto &$receive;
    };
}

sub run_until {    # loop until $$flag is true or the deadline passed
    my $flag = shift;
    while (!$$flag && time < $deadline) { $ua->loop(0.05, $flag) }
    return $$flag;
}

sub run_steps {
    my $call = shift;
    for my $step (grep { length } split /,/, $o{do}) {
        my ($what, $arg) = split /:/, $step, 2;
        if ($what eq 'sleep') {
            my $until = time + $arg;
            my $never = 0;
            $ua->loop(0.05, \$never) while time < $until && time < $deadline;
        } elsif ($what eq 'hold' || $what eq 'unhold') {
            my $code;
            $call->reinvite(call_on_hold => $what eq 'hold' ? 1 : 0,
                cb_final => sub { my ($status, $c, %i) = @_; $code = $i{code} || ($status eq 'OK' ? 200 : 0) });
            run_until(\$code) or return timeout($what);
            emit(event => $what, code => $code);
            return fail($what, $code) if $code != 200;
        } elsif ($what eq 'message') {
            # Call::request makes its answer callback the dialog's only
            # callback, so later requests in the dialog would go unanswered:
            # put the dialog's own callback back once the answer is in
            my $code;
            my $saved = $call->{ctx}{_callback};
            $call->request('MESSAGE', $arg, 'content-type' => 'text/plain',
                cb_final => sub { my ($status, $c, $i) = @_; $code = $i->{code} || -1 });
            run_until(\$code) or return timeout($what);
            $call->{ctx}->set_callback($saved);
            emit(event => 'message_sent', in_dialog => 1, code => $code);
            return fail($what, $code) if $code != 200;
        } elsif ($what eq 'bye') {
            my $code;
            $call->bye(cb_final => sub { $code = 1 });
            # the BYE callback does not say the code; look at the context's last answer
            run_until(\$code) or return timeout($what);
            emit(event => 'bye', by => 'us');
            return 1;
        } elsif ($what eq 'waitbye') {
            my $flag = 0;
            $ua->loop(0.05, \$flag) while !$got_bye && time < $deadline;
            return timeout($what) if !$got_bye;
            emit(event => 'bye', by => 'peer');
            return 1;
        } elsif ($what eq 'waitreinvite' || $what eq 'waitmessage') {
            my $counter = $what eq 'waitreinvite' ? \$got_reinvite : \$got_message;
            my $flag = 0;
            # a step waits for an event that may already have happened
            # while the previous step ran: count them instead
            $ua->loop(0.05, \$flag) while !$$counter && time < $deadline;
            return timeout($what) if !$$counter;
            $$counter--;
        } else {
            die "unknown step $step\n";
        }
    }
    return 1;
}

sub timeout { emit(event => 'timeout', step => shift); $failed++; return 0 }
sub fail { my ($step, $code) = @_; emit(event => 'failed', step => $step, code => $code); $failed++; return 0 }

emit(event => 'ready', leg => "$proto:$hostport");

if ($o{mode} eq 'call') {
    die "--to is required\n" if !$o{to};
    my ($established, $code, $call_id);
    my $call = $ua->invite($o{to},
        cb_final => sub {
            my ($status, $call, %info) = @_;
            if ($status eq 'OK') {
                # note it now: the peer's BYE may end the call in this same loop
                $established = 1;
                $call_id = $call->{ctx}->callid;
                $call->{param}{_established} = 1;
            } else {
                $code = $info{code} || -1;
            }
        },
    );
    my $flag = 0;
    $ua->loop(0.05, \$flag) while !$established && !defined $code && time < $deadline;
    if ($established) {
        emit(event => 'established', call_id => $call_id);
        run_steps($call);
    } elsif (defined $code) {
        emit(event => 'failed', code => $code);
        $failed++;
    } else {
        timeout('invite');
    }
} elsif ($o{mode} eq 'answer') {
    my @calls;
    $ua->listen(
        cb_create => sub {
            my ($call, $request) = @_;
            emit(event => 'incoming', from => scalar($request->get_header('from')));
            return 1;
        },
        cb_established => sub {
            my ($status, $call) = @_;
            return if $call->{param}{_established}++;    # ACK of a re-INVITE
            push @calls, $call;
        },
        $o{ring} ? (cb_invite => sub {
            my ($call, $request) = @_;
            return if $call->{param}{_established};
            my $ring_until = time + $o{ring};
            my $never = 0;
            $ua->loop(0.05, \$never) while time < $ring_until;
            return;
        }) : (),
    );
    # out-of-dialog MESSAGE: answer it before Simple's listener drops it
    my $endpoint = $ua->{endpoint};
    my $app = $endpoint->{application};
    $endpoint->set_application(sub {
        my ($ep, $ctx, $request, $leg, $from) = @_;
        if ($request->method eq 'MESSAGE') {
            answer_message($ep, $ctx, $request, $leg, $from, 0);
            $ep->close_context($ctx);
            return;
        }
        invoke_callback($app, $ep, $ctx, $request, $leg, $from);
    });
    # --calls 0: no call, only the steps (e.g. waitmessage)
    run_steps(undef) if !$o{calls};
    for my $n (1 .. $o{calls}) {
        my $flag = 0;
        $ua->loop(0.05, \$flag) while !@calls && time < $deadline;
        my $call = shift @calls or do { timeout('incoming'); last };
        emit(event => 'established', call_id => $call->{ctx} ? $call->{ctx}->callid : '');
        # the peer may re-INVITE or send MESSAGE right after its ACK, before
        # this loop saw the call: the counters start at the call, not here
        run_steps($call) or last;
        ($got_bye, $got_reinvite, $got_message) = (0, 0, 0);
    }
} elsif ($o{mode} eq 'message') {
    die "--to is required\n" if !$o{to};
    my $code;
    $ua->{endpoint}->new_request('MESSAGE', { from => $from, to => $o{to} },
        sub {
            my ($endpoint, $ctx, $error, $c, $packet) = @_;
            return if $c && $c =~ /^1/;
            $code = $c || -1;
            $endpoint->close_context($ctx);
        },
        $o{text} // 'hello', 'content-type' => 'text/plain');
    run_until(\$code) or timeout('message');
    emit(event => 'message_sent', in_dialog => 0, code => $code) if defined $code;
    $failed++ if defined $code && $code != 200;
    if ($o{do}) {    # e.g. waitmessage: the answer comes back as a MESSAGE
        my $flag = 0;
        $ua->loop(0.05, \$flag) while !$got_message && time < $deadline;
        timeout('waitmessage') if !$got_message;
    }
} else {
    die "unknown --mode $o{mode}\n";
}

emit(event => 'done', failed => $failed);
$ua->cleanup;
exit($failed ? 1 : 0);
