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
 * With -DHOLD, member 0 (-DHOLDERS=2: both members) *holds* frames (§5.8): it reads past
 * its release point without releasing, keeping `pin`/`progress` at the watermark; it
 * commits (progress, then pin) at any time while holding (the flush timer), and MUST
 * commit when it holds W frames (-DW, default 2) or before it ends or adopts; at the end
 * of its run it extends the run with one journaled change only when it is contiguous
 * (claim_next = run_end, no orphan), else it commits first and claims normally.
 *
 * With -DSETS, the runs of B frames, aligned to sequence numbers, are dealt round K sets
 * (-DK, default 2; §5.9): run r = s / B belongs to set r mod K. G is set GS (-DGS, default
 * 0) of its group in mode `one` (its members share the set's runs: journaled claims step
 * over the other sets' runs); X is a lone member of set XS (-DXS, default 1) in mode
 * `all` (its own private group, claiming lock-free like a broadcast consumer, §5.3), which
 * the killer may kill too. With XS = GS, X and G are two members of one set in mode `all`:
 * each must see every frame of the set. Checked besides the above: a frame is handed to G
 * or X only if it is of their set, every frame of G's set reaches G and every frame of X's
 * set reaches X (when they live to the end), and each one's accounting counts only the
 * frames of its set.
 *
 * scripts/check-model also builds mutants (e.g. -DMUTANT_NO_LOSSY_WAIT, a producer that
 * ignores the lossy reader's pin; the -DMUTANT_HOLD_* and -DMUTANT_SETS_* ones below) and
 * requires spin to reject them.
 *
 * Checked: no torn read (a lossless member's or the lossy reader's slot is never
 * rewritten while read; a slot holding a frame a live holder holds is not rewritten
 * before the holder commits); lossless means lossless (every frame reaches the group);
 * a frame is handed to the group twice only if a member held it, unreleased, when it
 * died (checked at every hand-over), and every such frame is handed to a successor
 * when the group lives on (re-delivery); the group's and the lossy consumer's
 * accounting; no deadlock (invalid end states).
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
#ifdef SETS
#ifndef K
#define K 2                /* sets of the group */
#endif
#ifndef GS
#define GS 0               /* G's set */
#endif
#ifndef XS
#define XS 1               /* X's set */
#endif
/* Frame s is of set `set`; the end of the run starting at c (an owed sequence); the next
 * sequence to claim after the run at c: the start of the set's next run (§5.9). */
#define OWNS(set, s) (((s) / B) % K == (set))
#define RUN_END(c) (((c) / B + 1) * B)
#ifdef MUTANT_SETS_STEP
#define NEXT_CLAIM(c) (((c) / B + 1) * B)   /* steps to the next run, of any set */
#else
#define NEXT_CLAIM(c) (((c) / B + K) * B)
#endif
/* Frames of set `set` below sequence x: whole rounds of K runs, then the part of x's
 * round that reaches into the set's run. */
#define CLAMP_B(v) ((v) < 0 -> 0 : ((v) > B -> B : (v)))
#define OWED(set, x) (((x) / (K * B)) * B + CLAMP_B((x) % (K * B) - (set) * B))
#else
#define OWNS(set, s) 1
#define RUN_END(c) ((c) + B)
#define NEXT_CLAIM(c) ((c) + B)
#define OWED(set, x) (x)
#define GS 0
#endif
#ifdef HOLD
#ifndef W
#define W 2                /* a holder commits when it holds W frames (§5.8) */
#endif
#ifndef HOLDERS
#define HOLDERS 1          /* members 0 .. HOLDERS-1 hold frames */
#endif
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

/* Group G: claim_next, seqlock, state, retired counter, journal (§7.6) */
byte claim_next = 0;
byte gen = 0;
byte gstate = ACTIVE;
byte orphans = 0;
byte ret_recv = 0;
byte j_len = 0;
byte j_e[2]; byte j_st[2]; byte j_pin[2]; byte j_start[2]; byte j_end[2]; byte j_rbase[2];
byte j_ret = 0;
byte j_claim = 0;

/* Entries of G's members (§3.2): next = rstart + done, received = rbase + done */
byte est[2];
byte pin[2];
byte rstart[2];
byte rend[2];
byte done[2];
byte rbase[2];

/* Lossy consumer L (its own group) */
byte claimL = 0;
byte pinL = NONE;
#ifdef LOSSY
bit maskL = 1;
#else
bit maskL = 0;
#endif
#ifdef LOSSY
byte estL = ACTIVE;
#else
byte estL = FREE;        /* no lossy consumer in this configuration */
#endif
byte recvL = 0;
byte missL = 0;

#ifdef SETS
/* X: a lone member of set XS (mode `all`), its own private group (§5.9): the group's
 * claim_next and the entry's pin, run and progress, as §3.2 and §3.3 give them. */
byte claimX = XS * B;    /* the first run of its set at or after head = 0 */
byte pinX = NONE;
byte estX = ACTIVE;
byte rsX = 0;
byte reX = 0;
byte doneX = 0;
byte rbaseX = 0;
bit deadX = 0;
bit exitedX = 0;
byte gotX[F];            /* deliveries of frame s to X */
byte releasedX = 0;      /* frames X released */
#define X_REAPABLE (deadX && estX == ACTIVE)
#define X_CHANGED (estX != ex || claimX != cx || pinX != px)
/* X's accounting (§12): received counts exactly the frames it released, all of its set */
#define X_MISCOUNTED ((estX == ACTIVE && rbaseX + doneX != releasedX) || releasedX > OWED(XS, head))
#else
bit deadX = 1;           /* no X in this configuration */
bit exitedX = 0;
#define X_REAPABLE 0
#define X_CHANGED 0
#define X_MISCOUNTED 0
#endif

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
bit held_at_death[F];    /* a member died holding s unreleased: it is delivered again */
byte reading[2];         /* s+1 while member m holds frame s, else 0 */
#ifdef HOLD
byte holding[F];         /* m+1 while live holder m holds frame s, read but not committed */
#endif
byte released_G = 0;     /* frames released by G's members */
bit exited[2];
bit gone[2];             /* a killed member's death has been fully recorded */
#ifdef LOSSY
bit exitedL = 0;
#else
bit exitedL = 1;
#endif
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
        done[j_e[ji]] = 0;
        rstart[j_e[ji]] = j_start[ji];
        rend[j_e[ji]] = j_end[ji];
        rbase[j_e[ji]] = j_rbase[ji];
        est[j_e[ji]] = j_st[ji];
        ji++
    :: else -> ji = 0; break
    od;
    ret_recv = j_ret;
    claim_next = j_claim;
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

/* The journal is private to the lock holder until `gen` turns odd, so preparing it and
 * the commit point form one step; a death before it is a death before the change. */
inline commit_and_apply() {
    apply_journal();
    gen++
}

/* Retire member m (dead), lock held: §7.2 through the journal. */
inline retire(m) {
    atomic {
        j_len = 1;
        j_e[0] = m;
        if
        :: est[1 - m] == ACTIVE && rstart[m] + done[m] < rend[m] &&
           !(finished && rstart[m] + done[m] >= end_seq) ->
            j_st[0] = ORPHAN; j_pin[0] = rstart[m] + done[m]
        :: else -> j_st[0] = FREE; j_pin[0] = NONE
        fi;
        j_start[0] = rstart[m] + done[m]; j_end[0] = rend[m]; j_rbase[0] = 0;
        j_ret = ret_recv + rbase[m] + done[m];
        j_claim = claim_next;
        gen++
    };
    commit_and_apply()
}

/* Member m claims the run [claim_next, RUN_END(claim_next)), lock held (§5.3, §5.9). */
inline claim(m) {
    atomic {
        j_len = 1;
        j_e[0] = m; j_st[0] = ACTIVE; j_pin[0] = claim_next; j_start[0] = claim_next;
        j_end[0] = RUN_END(claim_next); j_rbase[0] = rbase[m] + done[m];
        j_ret = ret_recv;
        j_claim = NEXT_CLAIM(claim_next);
        gen++
    };
    commit_and_apply()
}

#ifdef HOLD
/* Holder m, holding frames at the end of its run, extends it (§5.8): lock held, the
 * group has no orphan and claim_next = run_end. Its run becomes [next, RUN_END(claim_next))
 * with next the watermark, so the held frames stay in it; pin stays at the watermark. */
inline extend(m) {
    atomic {
        j_len = 1;
        j_e[0] = m; j_st[0] = ACTIVE;
        j_pin[0] = rstart[m] + done[m]; j_start[0] = rstart[m] + done[m];
        j_end[0] = RUN_END(claim_next); j_rbase[0] = rbase[m] + done[m];
        j_ret = ret_recv;
        j_claim = NEXT_CLAIM(claim_next);
        gen++
    };
    commit_and_apply()
}

/* Holder m commits everything it holds (§5.8): stores progress with done = rd - run_start
 * (the ghost release of the held frames goes with it), then pin = rd. Uses the caller's
 * locals `rd`, `wm` and `k`. */
inline commit(m) {
    d_step {
#ifndef MUTANT_HOLD_PROGRESS
        assert(wm == rstart[m] + done[m]);      /* the stored watermark is next */
#endif
        released_G = released_G + (rd - rstart[m] - done[m]);
        done[m] = rd - rstart[m];
        k = 0;
        do
        :: k < F -> if :: holding[k] == m + 1 -> holding[k] = 0 :: else -> skip fi; k++
        :: else -> k = 0; break
        od
    };
    atomic { pin[m] = rd; wm = rd }
}
#endif

/* Member m adopts the other's orphaned run, lock held; with `swap` it hands its own
 * unread run [rstart + done, rend) to the orphan entry (§7.3). */
inline adopt(m, swap) {
    atomic {
        j_len = 2;
        j_e[0] = m; j_st[0] = ACTIVE; j_pin[0] = rstart[1 - m]; j_start[0] = rstart[1 - m];
        j_end[0] = rend[1 - m]; j_rbase[0] = rbase[m] + done[m];
        j_e[1] = 1 - m;
        if
        :: swap ->
            j_st[1] = ORPHAN; j_pin[1] = rstart[m] + done[m]; j_start[1] = rstart[m] + done[m];
            j_end[1] = rend[m]
        :: else ->
            j_st[1] = FREE; j_pin[1] = NONE; j_start[1] = 0; j_end[1] = 0
        fi;
        j_rbase[1] = 0;
        j_ret = ret_recv;
        j_claim = claim_next;
        gen++
    };
    commit_and_apply()
}

/* The mate of m still owes frames below the end of the stream. */
#define MATE_OWES(m) (est[1 - (m)] == ACTIVE && rstart[1 - (m)] + done[1 - (m)] < rend[1 - (m)] && \
                      rstart[1 - (m)] + done[1 - (m)] < end_seq)

proctype Producer() {
    byte s = 0, f, g1, cn, p0, p1, e0, e1, slot, ji, cx, px, ex;
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
#ifdef SETS
        /* X's private group: claim_next before the pin, as for G (§6.1); it has no
         * journal (a lone member claims lock-free), so no seqlock either. */
        ex = estX;
        if
        :: ex != FREE ->
#ifndef MUTANT_SETS_FLOOR
            cx = claimX;
            if :: cx < f -> f = cx :: else -> skip fi;
#endif
            px = pinX;
            if :: px < f -> f = px :: else -> skip fi
        :: else -> skip
        fi;
#endif
        if
        :: f == NONE || s < f + N -> d_step { f = 0; g1 = 0; cn = 0; p0 = 0; p1 = 0; e0 = 0; e1 = 0; cx = 0; px = 0; ex = 0 }
        :: else ->
            /* block (futex) until something the floor depends on changes */
            (claim_next != cn || est[0] != e0 || pin[0] != p0 || est[1] != e1 ||
             pin[1] != p1 || gen != g1 || gstate != ACTIVE || X_CHANGED);
            goto scan
        fi;
        slot = s % N;
        stamp[slot] = WRITING(s);
#ifndef MUTANT_NO_LOSSY_WAIT
        if
        :: s >= N -> (maskL == 0 || pinL != s - N)   /* §6.3: wait for a lossy holder */
        :: else -> skip
        fi;
#endif
#ifdef HOLD
        assert(s < N || holding[s - N] == 0);   /* no live holder still holds the old frame */
#endif
        data[slot] = BUSY;
        data[slot] = s;
        stamp[slot] = PUB(s);
        head = s + 1;
        s++;
        slot = 0
    od;
    producer_done = 1
}

proctype Member(byte m) {
    byte s, ji;
    {
    do
    :: rstart[m] + done[m] >= rend[m] ->        /* run exhausted: orphan first, else claim */
        lock_acquire(M_ID(m));
        if
        :: est[1 - m] == ORPHAN -> adopt(m, 0)
        :: else -> claim(m)
        fi;
        lock_release()
    :: rstart[m] + done[m] < rend[m] ->
        s = rstart[m] + done[m];
        if
        :: head > s ->
            assert(stamp[s % N] == PUB(s));
            atomic { reading[m] = s + 1; got[s]++; assert(got[s] <= 1 + held_at_death[s]); assert(OWNS(GS, s)) };
            assert(data[s % N] == s);   /* read in place... */
            assert(data[s % N] == s);   /* ...and still the same frame at the end */
            atomic { done[m]++; released_G++; reading[m] = 0 };   /* one progress store */
            pin[m] = s + 1;
            s = 0
        :: head <= s && est[1 - m] == ORPHAN && rstart[1 - m] < s ->   /* §5.4 step 1 */
            lock_acquire(M_ID(m));
            if
            :: est[1 - m] == ORPHAN && rstart[1 - m] < s -> adopt(m, 1)
            :: else -> skip
            fi;
            lock_release();
            s = 0
        :: finished && s >= end_seq && !(est[1 - m] == ACTIVE && (dead[1 - m] || MATE_OWES(m))) ->
            /* §5.6, decided under the lock: adopt a departed mate's run, or end. A dead,
             * not yet reaped mate, or a live one that still owes frames, keeps us here. */
            lock_acquire(M_ID(m));
            if
            :: est[1 - m] == ORPHAN -> adopt(m, 0); lock_release()
            :: est[1 - m] == ACTIVE && MATE_OWES(m) -> lock_release()
            :: else -> exited[m] = 1; lock_release(); break
            fi
        fi
    od
    } unless { dead[m] };
    atomic {
        if :: dead[m] && lock == M_ID(m) -> lock = 0 :: else -> skip fi;
        gone[m] = dead[m];
        s = 0; ji = 0
    }
}

#ifdef HOLD
/* A holding member (§5.8). `rd` is its read position, `wm` the watermark it has stored
 * (= next = run_start + done); it holds [wm, rd). */
proctype Holder(byte m) {
    byte s, ji, k, rd, wm;
    {
    do
    :: rd >= rend[m] && rd == wm ->            /* nothing held, run exhausted: §5.3 */
        lock_acquire(M_ID(m));
        if
        :: est[1 - m] == ORPHAN -> adopt(m, 0)
        :: else -> claim(m)
        fi;
        atomic { lock_release(); rd = rstart[m] + done[m]; wm = rd }
    :: rd >= rend[m] && rd > wm && rd - wm < W ->   /* holding at the end of the run */
        lock_acquire(M_ID(m));
        if
#ifdef MUTANT_HOLD_NONCONTIG
        :: est[1 - m] != ORPHAN -> extend(m); lock_release()
#else
        :: est[1 - m] != ORPHAN && claim_next == rend[m] -> extend(m); lock_release()
#endif
        :: else -> lock_release(); commit(m)      /* commit first, then claim normally */
        fi
    :: rd > wm -> commit(m)                    /* at any time while holding (the timer) */
    :: rd < rend[m] && rd - wm < W && head > rd ->   /* §5.4 steps 1-3, no release */
        s = rd;
        assert(stamp[s % N] == PUB(s));
        atomic { holding[s] = m + 1; got[s]++; assert(got[s] <= 1 + held_at_death[s]); assert(OWNS(GS, s)) };
        assert(data[s % N] == s);   /* read in place */
#ifdef MUTANT_HOLD_PIN
        pin[m] = s + 1;             /* releases the slot per frame */
#endif
#ifdef MUTANT_HOLD_PROGRESS
        atomic { done[m]++; released_G++ };   /* stores progress per frame, pin later */
#endif
        rd++;
        s = 0
#ifdef MUTANT_HOLD_ADOPT
    :: rd < rend[m] && head <= rd && est[1 - m] == ORPHAN && rstart[1 - m] < rd ->
#else
    :: rd == wm && rd < rend[m] && head <= rd && est[1 - m] == ORPHAN && rstart[1 - m] < rd ->
#endif
        lock_acquire(M_ID(m));                 /* §5.4 step 1: never while holding */
        if
        :: est[1 - m] == ORPHAN && rstart[1 - m] < rd -> adopt(m, 1)
        :: else -> skip
        fi;
        atomic { lock_release(); rd = rstart[m] + done[m]; wm = rd }
    :: rd == wm && finished && rd >= end_seq &&
       !(est[1 - m] == ACTIVE && (dead[1 - m] || MATE_OWES(m))) ->
        /* §5.6, never while holding */
        lock_acquire(M_ID(m));
        if
        :: est[1 - m] == ORPHAN -> adopt(m, 0); atomic { lock_release(); rd = rstart[m]; wm = rd }
        :: est[1 - m] == ACTIVE && MATE_OWES(m) -> lock_release()
        :: else -> exited[m] = 1; lock_release(); break
        fi
    od
    } unless { dead[m] };
    atomic {
        if :: dead[m] && lock == M_ID(m) -> lock = 0 :: else -> skip fi;
        gone[m] = dead[m];
        s = 0; ji = 0; k = 0; rd = 0; wm = 0
    }
}
#endif

#ifdef LOSSY
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

#endif

#ifdef SETS
/* X, a lone member of set XS in mode `all` (§5.9): it claims lock-free like a broadcast
 * consumer (§5.3): load claim_next, pin its start, CAS claim_next to the set's next run,
 * then store the run. Its group ends with it, so the run words are one step here: only
 * the producer reads X's words, and it reads claim_next and pin. */
proctype SetMember() {
    byte c, s;
    bit won;
    {
    do
    :: rsX + doneX >= reX ->
        c = claimX;
        pinX = c;
        atomic {
            if
            :: claimX == c -> claimX = NEXT_CLAIM(c); won = 1
            :: else -> won = 0
            fi
        };
        if
        :: won ->
#ifdef MUTANT_SETS_SOLO_RUN
            atomic { rbaseX = rbaseX + doneX; doneX = 0; rsX = c; reX = NEXT_CLAIM(c) }
#else
            atomic { rbaseX = rbaseX + doneX; doneX = 0; rsX = c; reX = RUN_END(c) }
#endif
        :: else -> skip
        fi
    :: rsX + doneX < reX ->
        s = rsX + doneX;
        if
        :: head > s ->
            assert(stamp[s % N] == PUB(s));
            atomic { gotX[s]++; assert(gotX[s] == 1); assert(OWNS(XS, s)) };
            assert(data[s % N] == s);   /* read in place... */
            assert(data[s % N] == s);   /* ...and still the same frame at the end */
            atomic { doneX++; releasedX++ };   /* one progress store */
            pinX = s + 1;
            s = 0
        :: finished && s >= end_seq -> exitedX = 1; break
        fi
    od
    } unless { deadX }
}
#endif

/* Reaps dead consumers at any time; may itself be killed mid-change. */
proctype Reaper() {
    byte ji;
end_idle:
    do
    :: (dead[0] && est[0] == ACTIVE) || (dead[1] && est[1] == ACTIVE) ||
       (deadL && estL == ACTIVE) || X_REAPABLE ->
        {
            lock_acquire(R_ID);
            reaper_busy = 1;
            if
            :: dead[0] && est[0] == ACTIVE -> retire(0)
            :: dead[1] && est[1] == ACTIVE -> retire(1)
            :: deadL && estL == ACTIVE -> atomic { pinL = NONE; maskL = 0; estL = FREE }
#ifdef SETS
            /* its private group ends with it (§7.2: freed, then dissolved) */
            :: deadX && estX == ACTIVE -> atomic { pinX = NONE; estX = FREE }
#endif
            :: else -> skip
            fi;
            reaper_busy = 0;
            lock_release()
        } unless { kill_reaper };
        atomic { if :: lock == R_ID -> lock = 0 :: else -> skip fi; reaper_busy = 0; kill_reaper = 0 }
    od
}

/* Kills member m; records the frames it dies holding unreleased (the one it is reading;
 * a holder's uncommitted ones), which its group MUST deliver again (§7.3). */
inline kill_member(m) {
    dead[m] = 1; kills++;
    if :: reading[m] > 0 -> held_at_death[reading[m] - 1] = 1 :: else -> skip fi;
#ifdef HOLD
    k = 0;
    do
    :: k < F -> if :: holding[k] == m + 1 -> holding[k] = 0; held_at_death[k] = 1 :: else -> skip fi; k++
    :: else -> k = 0; break
    od
#endif
}

active proctype Killer() {
#ifdef HOLD
    byte k;
#endif
    do
    :: atomic { kills < MAXKILLS && !dead[0] -> kill_member(0) }
    :: atomic { kills < MAXKILLS && !dead[1] -> kill_member(1) }
    :: kills < MAXKILLS && !deadL && estL == ACTIVE -> deadL = 1; kills++
#ifdef SETS
    :: kills < MAXKILLS && !deadX && !exitedX -> deadX = 1; kills++
#endif
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
         ret_recv + rbase[0] + done[0] + rbase[1] + done[1] != released_G) ||
        (released_G > OWED(GS, head)) || (recvL + missL > head) || X_MISCOUNTED ->
        assert(false)
    }
}

/* Once everyone is done, if the group lived to the end of the stream: lossless (every
 * frame reached a member), exactly once apart from re-delivery (a frame is handed over a
 * second time exactly when a member died holding it unreleased), every frame released
 * once; and the lossy consumer's accounting. */
active proctype Outcome() {
    byte s = 0;
    (producer_done && (exited[0] || gone[0]) && (exited[1] || gone[1]) && (exitedL || deadL)
     && (exitedX || deadX));
    if
    :: exited[0] || exited[1] ->        /* the group lived to the end of the stream */
        do
        :: s < F && OWNS(GS, s) ->
            assert(got[s] >= 1);                        /* lossless */
            assert(got[s] == 1 + held_at_death[s]);     /* exactly once; re-delivery */
            s++
        :: s < F && !OWNS(GS, s) -> assert(got[s] == 0); s++   /* another set's frame */
        :: else -> break
        od;
        assert(released_G == OWED(GS, F))
    :: else -> skip
    fi;
#ifdef SETS
    s = 0;
    if
    :: exitedX ->                       /* X lived to the end: every frame of its set */
        do
        :: s < F -> assert(gotX[s] == OWNS(XS, s)); s++
        :: else -> break
        od;
        assert(releasedX == OWED(XS, F) && rbaseX + doneX == releasedX)
    :: else -> skip
    fi;
#endif
#ifdef LOSSY
    if
    :: exitedL -> assert(recvL + missL == F)
    :: else -> skip
    fi
#endif
}

init {
    byte i;
    do
    :: i < N -> stamp[i] = 0; data[i] = NONE; i++
    :: else -> break
    od;
    est[0] = ACTIVE; est[1] = ACTIVE;
    claim_next = GS * B;    /* the first run of G's set at or after head = 0 (§5.9) */
    pin[0] = NONE; pin[1] = NONE;
    atomic {
        run Producer();
#if defined(HOLD) && HOLDERS >= 1
        run Holder(0);
#else
        run Member(0);
#endif
#if defined(HOLD) && HOLDERS >= 2
        run Holder(1);
#else
        run Member(1);
#endif
#ifdef LOSSY
        run Lossy();
#endif
#ifdef SETS
        run SetMember();
#endif
        run Reaper()
    }
}
