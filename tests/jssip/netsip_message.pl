#!/usr/bin/perl
# The UDP side of the JsSIP interop test, built on Perl's Net::SIP (not our
# code): sends a MESSAGE to --to through the proxy, then waits for one
# back and answers it 200. One line per event on stdout:
#   MESSAGE SENT code=N | MESSAGE FAILED errno=N | MESSAGE RECEIVED body=...
# Exit 0 when both happened within --timeout seconds, 1 otherwise.
use strict;
use warnings;
use Getopt::Long;
use Net::SIP;

$| = 1;
my %o = (timeout => 20, text => 'ping from Net::SIP');
GetOptions(\%o, 'proxy=s', 'leg=s', 'from=s', 'to=s', 'timeout=i', 'text=s', 'debug=i') or die "bad options\n";
Net::SIP::Debug->level($o{debug}) if $o{debug};
for (qw(proxy leg from to)) { die "--$_ is required\n" if !$o{$_} }

my $ua = Net::SIP::Simple->new(from => $o{from}, leg => $o{leg}, outgoing_proxy => $o{proxy});
my $endpoint = $ua->{endpoint};
my ($stop, $sent, $received);
$ua->add_timer($o{timeout}, sub { print "TIMEOUT\n"; $stop = 1 });

$endpoint->set_application(sub {
    my ($endpoint, $ctx, $request, $leg, $from) = @_;
    if ($request->method eq 'MESSAGE') {
        my $body = ($request->as_parts)[3];
        print "MESSAGE RECEIVED body=$body\n";
        $endpoint->new_response($ctx, $request->create_response('200', 'OK'), $leg, $from);
        $received = 1;
    }
    $endpoint->close_context($ctx);
});

$endpoint->new_request('MESSAGE', { from => $o{from}, to => $o{to} }, sub {
    my ($endpoint, $ctx, $errno, $code) = @_;
    if ($errno) {
        print "MESSAGE FAILED errno=$errno code=" . ($code || 0) . "\n";
        $sent = -1;
    } elsif ($code && $code >= 200) {
        print "MESSAGE SENT code=$code\n";
        $sent = $code;
    }
}, $o{text}, 'Content-Type' => 'text/plain');

my $done;
$ua->add_timer(0.05, sub { $done = 1 if $sent && $received }, 0.05);
$ua->loop(\$done, \$stop);
exit(($sent && $sent == 200 && $received) ? 0 : 1);
