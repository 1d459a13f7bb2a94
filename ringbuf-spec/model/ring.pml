/*
 * Promela model of the streamd ring protocol (ringbuf-spec/SPEC.md §5-§7).
 *
 * One producer publishes F frames into N slots. A lossless group G of two members
 * (batch B) and a lossy broadcast consumer L read them. A killer may kill, at any step,
 * up to MAXKILLS of: either member, the lossy consumer, or a reaper in the middle of a
 * membership change. A dead process's lock is released (flock semantics). Dead consumers
 * are reaped by a reaper that may run at any time (the producer, a consumer or a joiner
 * in the implementation). Membership changes of G go through the redo journal (§7.6).
 *
 * Every shared-memory access is its own step, so spin explores every interleaving
 * allowed by sequential consistency (the handshakes in §4 are SeqCst; the Acquire/Release
 * pairs are modelled as SeqCst, which is stronger).
 *
 * Checked: no torn read (a lossless member's or the lossy reader's slot is never
 * rewritten while read); lossless means lossless (every frame reaches the group); each
 * frame goes to exactly one member, apart from the one a dying member held; the group's
 * and the lossy consumer's accounting; no deadlock (invalid end states).
 */

#ifndef F
#define F 4
#endif
#ifndef N
#define N 2
#endif
#ifndef B
#define B 2
#endif
#ifndef MAXKILLS
#define MAXKILLS 2
#endif

#define NONE 255
#define WRITING(s) (2*(s)+1)
#define PUB(s) (2*(s)+2)
#define BUSY 254

#define FREE 0
#define ACTIVE 1
#define ORPHAN 2

/* Slots */
byte stamp[N];
byte data[N];            /* which frame the payload holds; BUSY while written */

/* Ring header */
byte head = 0;
bit finished = 0;
byte end_seq = 0;

/* Group G: claim_next, seqlock, state, retired counter, journal */
byte claim_next = 0;
byte gen = 0;
byte gstate = ACTIVE;
byte orphans = 0;
byte ret_recv = 0;
byte j_len = 0;
byte j_e[2]; byte j_st[2]; byte j_pin[2]; byte j_nx[2]; byte j_end[2]; byte j_recv[2];
byte j_ret = 0;

/* Entries of G's members */
byte est[2];
byte pin[2];
byte nx[2];
byte rend[2];
byte recv[2];

/* Lossy consumer L (its own group) */
byte claimL = 0;
byte pinL = NONE;
bit maskL = 1;
byte estL = ACTIVE;
byte recvL = 0;
byte missL = 0;

/* The membership lock (flock): 0 free, else holder id */
byte lock = 0;
#define P_ID 1
#define L_ID 2
#define R_ID 3
#define M_ID(m) (4 + (m))

/* Killing */
bit dead[2];
bit deadL = 0;
bit kill_reaper = 0;
bit reaper_busy = 0;
byte kills = 0;

/* Ghost state for the properties */
byte got[F];             /* deliveries of frame s to G (counted when received) */
bit held_at_death[F];    /* a member died holding s: it may be delivered again */
byte reading[2];         /* s+1 while member m holds frame s, else 0 */
byte released_G = 0;     /* frames released by G's members */
bit exited[2];
bit exitedL = 0;
bit producer_done = 0;

inline lock_acquire(id) {
    atomic { lock == 0 -> lock = id };
    recover()
}

inline lock_release() {
    lock = 0
}

/* §7.6: whoever takes the lock finishes a change whose holder died. */
inline recover() {
    if
    :: gen % 2 == 1 -> apply_journal(); gen++
    :: else -> skip
    fi
}

/* Uses the caller's local `ji`. */
inline apply_journal() {
    ji = 0;
    do
    :: ji < j_len ->
        pin[j_e[ji]] = j_pin[ji];
        nx[j_e[ji]] = j_nx[ji];
        rend[j_e[ji]] = j_end[ji];
        recv[j_e[ji]] = j_recv[ji];
        est[j_e[ji]] = j_st[ji];
        ji++
    :: else -> break
    od;
    ret_recv = j_ret;
    normalize()
}

inline normalize() {
    if
    :: est[0] != ACTIVE && est[1] != ACTIVE && gstate == ACTIVE ->
        if :: est[0] == ORPHAN -> pin[0] = NONE; est[0] = FREE :: else -> skip fi;
        if :: est[1] == ORPHAN -> pin[1] = NONE; est[1] = FREE :: else -> skip fi;
        gstate = FREE
    :: else -> skip
    fi;
    orphans = (est[0] == ORPHAN) + (est[1] == ORPHAN)
}

/* Retire member m (dead), lock held: §7.2 through the journal. */
inline retire(m) {
    j_len = 1;
    j_e[0] = m;
    if
    :: est[1 - m] == ACTIVE && nx[m] < rend[m] -> j_st[0] = ORPHAN; j_pin[0] = pin[m]
    :: else -> j_st[0] = FREE; j_pin[0] = NONE
    fi;
    j_nx[0] = nx[m]; j_end[0] = rend[m]; j_recv[0] = 0;
    j_ret = ret_recv + recv[m];
    gen++;
    apply_journal();
    gen++
}

/* Member m adopts the other's orphaned run; hands back [nx, rend) if own is set. */
inline adopt(m, own) {
    lock_acquire(M_ID(m));
    if
    :: est[1 - m] == ORPHAN ->
        j_len = 2;
        j_e[0] = m; j_st[0] = ACTIVE; j_pin[0] = nx[1 - m]; j_nx[0] = nx[1 - m];
        j_end[0] = rend[1 - m]; j_recv[0] = recv[m];
        j_e[1] = 1 - m;
        if
        :: own && nx[m] < rend[m] ->
            j_st[1] = ORPHAN; j_pin[1] = nx[m]; j_nx[1] = nx[m]; j_end[1] = rend[m]
        :: else ->
            j_st[1] = FREE; j_pin[1] = NONE; j_nx[1] = 0; j_end[1] = 0
        fi;
        j_recv[1] = 0;
        j_ret = ret_recv;
        gen++;
        apply_journal();
        gen++
    :: else -> skip
    fi;
    lock_release()
}

proctype Producer() {
    byte s = 0, f, g1, cn, p0, p1, e0, e1, slot, ji;
    do
    :: s == F -> end_seq = s; finished = 1; break
    :: s < F ->
scan:
        g1 = gen;
        if
        :: g1 % 2 == 1 -> lock_acquire(P_ID); lock_release(); goto scan
        :: else -> skip
        fi;
        if
        :: gstate == ACTIVE ->
            cn = claim_next;           /* claim_next before the pins (§6.1) */
            e0 = est[0]; p0 = pin[0];
            e1 = est[1]; p1 = pin[1];
            if :: gen != g1 -> goto scan :: else -> skip fi;
            f = cn;
            if :: e0 != FREE && p0 < f -> f = p0 :: else -> skip fi;
            if :: e1 != FREE && p1 < f -> f = p1 :: else -> skip fi
        :: else -> f = NONE
        fi;
        if
        :: f == NONE || s < f + N -> skip
        :: else ->
            /* block (futex) until something the floor depends on changes */
            (claim_next != cn || est[0] != e0 || pin[0] != p0 || est[1] != e1 ||
             pin[1] != p1 || gen != g1 || gstate != ACTIVE);
            goto scan
        fi;
        slot = s % N;
        stamp[slot] = WRITING(s);
        if
        :: s >= N -> (maskL == 0 || pinL != s - N)   /* §6.3: wait for a lossy holder */
        :: else -> skip
        fi;
        data[slot] = BUSY;
        data[slot] = s;
        stamp[slot] = PUB(s);
        head = s + 1;
        s++
    od;
    producer_done = 1
}

proctype Member(byte m) {
    byte s, c, ji;
    bit won;
    {
    do
    :: nx[m] >= rend[m] ->
        if
        :: orphans > 0 -> adopt(m, 0)
        :: else ->
            c = claim_next;
            pin[m] = c;                 /* pin before the claim CAS (§5.3) */
            atomic {
                if
                :: claim_next == c -> claim_next = c + B; won = 1
                :: else -> won = 0
                fi
            };
            if
            :: won -> nx[m] = c; rend[m] = c + B
            :: else -> skip
            fi
        fi
    :: nx[m] < rend[m] ->
        s = nx[m];
        if
        :: head > s ->
            assert(stamp[s % N] == PUB(s));
            atomic { reading[m] = s + 1; got[s]++ };
            assert(data[s % N] == s);   /* read in place... */
            assert(data[s % N] == s);   /* ...and still the same frame at the end */
            atomic { recv[m]++; released_G++; reading[m] = 0 };
            nx[m] = s + 1;
            pin[m] = s + 1
        :: head <= s && orphans > 0 -> adopt(m, 1)    /* §5.4 step 1 */
        :: finished && s >= end_seq && orphans == 0 &&
           !(est[1 - m] == ACTIVE && dead[1 - m]) ->    /* reaped, nothing to adopt */
            exited[m] = 1;
            break
        fi
    od
    } unless { dead[m] };
    atomic {
        if :: dead[m] && lock == M_ID(m) -> lock = 0 :: else -> skip fi;
        if :: dead[m] && reading[m] > 0 -> held_at_death[reading[m] - 1] = 1 :: else -> skip fi
    }
}

proctype Lossy() {
    byte s, c, hd;
    bit won;
    {
    do
    :: c = claimL;
       hd = head;
       if
       :: c + N < hd ->               /* a ring behind: skip to the newest (§5.5) */
           atomic {
               if
               :: claimL == c -> claimL = hd - 1; missL = missL + (hd - 1 - c)
               :: else -> skip
               fi
           }
       :: else ->
           atomic {
               if
               :: claimL == c -> claimL = c + 1; won = 1
               :: else -> won = 0
               fi
           };
           if
           :: won ->
               s = c;
               if
               :: head > s ->
                   pinL = s;
                   if
                   :: stamp[s % N] == PUB(s) ->
                       assert(data[s % N] == s);
                       assert(data[s % N] == s);
                       recvL++;
                       pinL = NONE
                   :: else -> pinL = NONE; missL++
                   fi
               :: finished && s >= end_seq -> exitedL = 1; break
               fi
           :: else -> skip
           fi
       fi
    od
    } unless { deadL }
}

/* Reaps dead consumers at any time; may itself be killed mid-change. */
proctype Reaper() {
    byte ji;
end_idle:
    do
    :: (dead[0] && est[0] == ACTIVE) || (dead[1] && est[1] == ACTIVE) ||
       (deadL && estL == ACTIVE) ->
        {
            lock_acquire(R_ID);
            reaper_busy = 1;
            if
            :: dead[0] && est[0] == ACTIVE -> retire(0)
            :: dead[1] && est[1] == ACTIVE -> retire(1)
            :: deadL && estL == ACTIVE -> atomic { pinL = NONE; maskL = 0; estL = FREE }
            :: else -> skip
            fi;
            reaper_busy = 0;
            lock_release()
        } unless { kill_reaper };
        atomic { if :: lock == R_ID -> lock = 0 :: else -> skip fi; reaper_busy = 0; kill_reaper = 0 }
    od
}

active proctype Killer() {
    do
    :: kills < MAXKILLS && !dead[0] -> dead[0] = 1; kills++
    :: kills < MAXKILLS && !dead[1] -> dead[1] = 1; kills++
    :: kills < MAXKILLS && !deadL -> deadL = 1; kills++
    :: kills < MAXKILLS && reaper_busy -> kill_reaper = 1; kills++
    :: break
    od
}

/* Accounting at every quiescent state (no change in flight): delivered counters equal
 * the frames released; nothing is counted that was not published. */
active proctype Accounting() {
end_watch:
    atomic {
        (lock == 0 && gen % 2 == 0 && gstate == ACTIVE &&
         ret_recv + recv[0] + recv[1] != released_G) ||
        (released_G > head) || (recvL + missL > head) ->
        assert(false)
    }
}

/* Once everyone is done: lossless, exactly-once, lossy accounting. */
active proctype Outcome() {
    byte s = 0;
    (producer_done && (exited[0] || dead[0]) && (exited[1] || dead[1]) && (exitedL || deadL));
    if
    :: exited[0] || exited[1] ->        /* the group outlived its deaths */
        assert(released_G == F);
        do
        :: s < F -> assert(got[s] >= 1 && got[s] <= 1 + held_at_death[s]); s++
        :: else -> break
        od
    :: else -> skip
    fi;
    if
    :: exitedL -> assert(recvL + missL == F)
    :: else -> skip
    fi
}

init {
    byte i;
    do
    :: i < N -> stamp[i] = 0; data[i] = NONE; i++
    :: else -> break
    od;
    est[0] = ACTIVE; est[1] = ACTIVE;
    pin[0] = NONE; pin[1] = NONE;
    atomic {
        run Producer();
        run Member(0);
        run Member(1);
        run Lossy();
        run Reaper()
    }
}
