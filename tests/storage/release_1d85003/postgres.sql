--
-- PostgreSQL database dump
--


-- Dumped from database version 15.20 (Debian 15.20-0+deb12u1)
-- Dumped by pg_dump version 15.20 (Debian 15.20-0+deb12u1)

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: budget; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.budget (
    budget_id character varying(255) NOT NULL,
    max_budget double precision,
    soft_budget double precision,
    max_parallel_requests integer,
    tpm_limit bigint,
    rpm_limit bigint,
    budget_duration character varying(32),
    created_at double precision NOT NULL,
    updated_at double precision NOT NULL
);


--
-- Name: budget_alert_sent; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.budget_alert_sent (
    entity_kind character varying(16) NOT NULL,
    entity_id character varying(255) NOT NULL,
    event character varying(32) NOT NULL,
    line double precision NOT NULL,
    period double precision NOT NULL,
    sent_at double precision NOT NULL
);


--
-- Name: budget_reservation; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.budget_reservation (
    id integer NOT NULL,
    request_id character varying(64) NOT NULL,
    entity_kind character varying(16) NOT NULL,
    entity_id character varying(255) NOT NULL,
    amount double precision NOT NULL,
    expires_at double precision NOT NULL,
    created_at double precision NOT NULL
);


--
-- Name: budget_reservation_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.budget_reservation_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: budget_reservation_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.budget_reservation_id_seq OWNED BY public.budget_reservation.id;


--
-- Name: comptroller_migration; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.comptroller_migration (
    name character varying(255) NOT NULL,
    applied_at double precision NOT NULL
);


--
-- Name: customer; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.customer (
    user_id character varying(255) NOT NULL,
    alias character varying(255),
    spend double precision NOT NULL,
    blocked boolean NOT NULL,
    budget_id character varying(255),
    allowed_model_region character varying(32),
    default_model character varying(255),
    budget_reset_at double precision,
    created_at double precision NOT NULL
);


--
-- Name: key; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.key (
    token character varying(64) NOT NULL,
    key_name character varying(32) NOT NULL,
    key_alias character varying(255),
    user_id character varying(255),
    team_id character varying(255),
    models text NOT NULL,
    max_budget double precision,
    soft_budget double precision,
    spend double precision NOT NULL,
    budget_duration character varying(32),
    budget_reset_at double precision,
    expires double precision,
    max_parallel_requests integer,
    tpm_limit bigint,
    rpm_limit bigint,
    metadata text NOT NULL,
    blocked boolean NOT NULL,
    created_at double precision NOT NULL
);


--
-- Name: proxy_spend; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.proxy_spend (
    id integer NOT NULL,
    spend double precision NOT NULL,
    budget_reset_at double precision,
    created_at double precision NOT NULL
);


--
-- Name: rate_limit_lease; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.rate_limit_lease (
    request_id character varying(64) NOT NULL,
    kind character varying(16) NOT NULL,
    entity character varying(255) NOT NULL,
    expires_at double precision NOT NULL
);


--
-- Name: rate_limit_window; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.rate_limit_window (
    kind character varying(16) NOT NULL,
    entity character varying(255) NOT NULL,
    window_start double precision NOT NULL,
    requests bigint NOT NULL,
    tokens bigint NOT NULL,
    in_flight integer NOT NULL,
    rpm_limit bigint,
    tpm_limit bigint,
    parallel_limit integer,
    admitted integer NOT NULL
);


--
-- Name: spend_log; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.spend_log (
    request_id character varying(64) NOT NULL,
    call_type character varying(32) NOT NULL,
    api_key character varying(64),
    user_id character varying(255),
    team_id character varying(255),
    end_user character varying(255),
    model character varying(255) NOT NULL,
    model_group character varying(255) NOT NULL,
    prompt_tokens integer NOT NULL,
    completion_tokens integer NOT NULL,
    total_tokens integer NOT NULL,
    spend double precision NOT NULL,
    start_time double precision NOT NULL,
    end_time double precision NOT NULL,
    status character varying(32) NOT NULL,
    metadata text NOT NULL
);


--
-- Name: team; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.team (
    team_id character varying(255) NOT NULL,
    team_alias character varying(255),
    spend double precision NOT NULL,
    created_at double precision NOT NULL
);


--
-- Name: unpriced_model; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.unpriced_model (
    model_group character varying(255) NOT NULL,
    upstream_model character varying(255) NOT NULL,
    calls bigint NOT NULL,
    tokens bigint NOT NULL,
    first_seen double precision NOT NULL,
    last_seen double precision NOT NULL
);


--
-- Name: user; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public."user" (
    user_id character varying(255) NOT NULL,
    user_email character varying(255),
    team_id character varying(255),
    models text NOT NULL,
    max_budget double precision,
    spend double precision NOT NULL,
    budget_duration character varying(32),
    budget_reset_at double precision,
    max_parallel_requests integer,
    tpm_limit bigint,
    rpm_limit bigint,
    metadata text NOT NULL,
    created_at double precision NOT NULL
);


--
-- Name: webhook_alert_once; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.webhook_alert_once (
    key character varying(512) NOT NULL,
    created_at double precision NOT NULL
);


--
-- Name: webhook_outbox; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.webhook_outbox (
    id character varying(64) NOT NULL,
    event character varying(64) NOT NULL,
    payload text NOT NULL,
    created_at double precision NOT NULL,
    next_attempt_at double precision NOT NULL,
    attempts integer NOT NULL,
    claimed_until double precision,
    claim_token character varying(32),
    sent_at double precision,
    last_error text
);


--
-- Name: budget_reservation id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.budget_reservation ALTER COLUMN id SET DEFAULT nextval('public.budget_reservation_id_seq'::regclass);


--
-- Data for Name: budget; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.budget VALUES ('tier-1', 5, NULL, NULL, NULL, NULL, '30d', 1796602920.3492386, 1796602920.3492386);
INSERT INTO public.budget VALUES ('customer-budget-02c2b78fe23e4589bbdcec2597279477', 2, NULL, NULL, NULL, NULL, '1d', 1796602920.4384813, 1796602920.4384813);


--
-- Data for Name: budget_alert_sent; Type: TABLE DATA; Schema: public; Owner: -
--



--
-- Data for Name: budget_reservation; Type: TABLE DATA; Schema: public; Owner: -
--



--
-- Data for Name: comptroller_migration; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.comptroller_migration VALUES ('m0001_core_tables', 1796602919.6440828);
INSERT INTO public.comptroller_migration VALUES ('m0002_unpriced_model', 1796602919.6843965);


--
-- Data for Name: customer; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.customer VALUES ('ishaan3', NULL, 8e-05, false, 'tier-1', NULL, NULL, 1799194920.4284117, 1796602920.4284117);
INSERT INTO public.customer VALUES ('own-budget', NULL, 8e-05, false, 'customer-budget-02c2b78fe23e4589bbdcec2597279477', NULL, NULL, 1796689320.4384813, 1796602920.4384813);


--
-- Data for Name: key; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.key VALUES ('23daf6f982e85daddc1bcc86390754bae82060495288856d4751178bc1ab342a', 'sk-...oVsM', NULL, 'alice', NULL, '[]', NULL, NULL, 0, NULL, NULL, NULL, NULL, NULL, NULL, '{}', false, 1796602920.3770685);
INSERT INTO public.key VALUES ('90dd21d597cac85bd6cc7d66a32e9ffbb18149e92723e8896ee7e9e8e5255322', 'sk-...5003', 'alice-key', 'alice', NULL, '["mistral"]', 1, 0.5, 0.00016, '7d', 1797207720.3982506, NULL, 5, 100000, 100, '{"team":"x"}', false, 1796602920.3982506);


--
-- Data for Name: proxy_spend; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.proxy_spend VALUES (1, 0.00016, 1799194919.6431196, 1796602919.6431196);


--
-- Data for Name: rate_limit_lease; Type: TABLE DATA; Schema: public; Owner: -
--



--
-- Data for Name: rate_limit_window; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.rate_limit_window VALUES ('key', '90dd21d597cac85bd6cc7d66a32e9ffbb18149e92723e8896ee7e9e8e5255322', 1796602920.4894352, 2, 36, 0, 100, 100000, 5, 1);


--
-- Data for Name: spend_log; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.spend_log VALUES ('chatcmpl-c48bb4de5c354286b030f59c9099d069', 'chat', '90dd21d597cac85bd6cc7d66a32e9ffbb18149e92723e8896ee7e9e8e5255322', 'alice', NULL, 'ishaan3', 'mistral-small', 'mistral', 7, 11, 18, 8e-05, 1796602920.4782007, 1796602920.5365784, 'success', '{}');
INSERT INTO public.spend_log VALUES ('chatcmpl-971cdba18b7c438fa91e62ebbbd1ec75', 'chat', '90dd21d597cac85bd6cc7d66a32e9ffbb18149e92723e8896ee7e9e8e5255322', 'alice', NULL, 'own-budget', 'mistral-small', 'mistral', 7, 11, 18, 8e-05, 1796602920.5647883, 1796602920.6003504, 'success', '{}');


--
-- Data for Name: team; Type: TABLE DATA; Schema: public; Owner: -
--



--
-- Data for Name: unpriced_model; Type: TABLE DATA; Schema: public; Owner: -
--



--
-- Data for Name: user; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public."user" VALUES ('alice', NULL, NULL, '[]', 10, 0.00016, '30d', 1799194920.3770685, NULL, NULL, NULL, '{}', 1796602920.3770685);


--
-- Data for Name: webhook_alert_once; Type: TABLE DATA; Schema: public; Owner: -
--



--
-- Data for Name: webhook_outbox; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.webhook_outbox VALUES ('2ab3daf7815d4d3b9cd688ea9e6f5cbb', 'key_created', '{"spend": 0.0, "max_budget": null, "token": "23daf6f982e85daddc1bcc86390754bae82060495288856d4751178bc1ab342a", "customer_id": null, "user_id": "alice", "team_id": null, "user_email": null, "key_alias": null, "projected_exceeded_date": null, "projected_spend": null, "event": "key_created", "event_group": "key", "event_message": "API key created. Key=sk-...oVsM, user_id=alice"}', 1796602920.3853786, 1796602921.508326, 1, NULL, NULL, NULL, 'NewConnectionError');
INSERT INTO public.webhook_outbox VALUES ('cc2e236863744f5280cf67c0029ff9ec', 'key_created', '{"spend": 0.0, "max_budget": 1.0, "token": "90dd21d597cac85bd6cc7d66a32e9ffbb18149e92723e8896ee7e9e8e5255322", "customer_id": null, "user_id": "alice", "team_id": null, "user_email": null, "key_alias": "alice-key", "projected_exceeded_date": null, "projected_spend": null, "event": "key_created", "event_group": "key", "event_message": "API key created. Key=sk-...5003, user_id=alice"}', 1796602920.4015822, 1796602920.4015822, 0, NULL, NULL, NULL, NULL);
INSERT INTO public.webhook_outbox VALUES ('130ee8fafd9f40d69fdbe636bc035203', 'spend_tracked', '{"spend": 8e-05, "max_budget": 5.0, "token": "90dd21d597cac85bd6cc7d66a32e9ffbb18149e92723e8896ee7e9e8e5255322", "customer_id": "ishaan3", "user_id": "alice", "team_id": null, "user_email": null, "key_alias": "alice-key", "projected_exceeded_date": null, "projected_spend": null, "event": "spend_tracked", "event_group": "customer", "event_message": "Customer spend tracked. Customer=ishaan3, spend=8e-05"}', 1796602920.5431347, 1796602920.5431347, 0, NULL, NULL, NULL, NULL);
INSERT INTO public.webhook_outbox VALUES ('46bb522c05e244a7845e056452578d45', 'spend_tracked', '{"spend": 8e-05, "max_budget": 2.0, "token": "90dd21d597cac85bd6cc7d66a32e9ffbb18149e92723e8896ee7e9e8e5255322", "customer_id": "own-budget", "user_id": "alice", "team_id": null, "user_email": null, "key_alias": "alice-key", "projected_exceeded_date": null, "projected_spend": null, "event": "spend_tracked", "event_group": "customer", "event_message": "Customer spend tracked. Customer=own-budget, spend=8e-05"}', 1796602920.610514, 1796602920.610514, 0, NULL, NULL, NULL, NULL);


--
-- Name: budget_reservation_id_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.budget_reservation_id_seq', 8, true);


--
-- Name: budget_alert_sent budget_alert_sent_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.budget_alert_sent
    ADD CONSTRAINT budget_alert_sent_pkey PRIMARY KEY (entity_kind, entity_id, event, line, period);


--
-- Name: budget budget_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.budget
    ADD CONSTRAINT budget_pkey PRIMARY KEY (budget_id);


--
-- Name: budget_reservation budget_reservation_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.budget_reservation
    ADD CONSTRAINT budget_reservation_pkey PRIMARY KEY (id);


--
-- Name: comptroller_migration comptroller_migration_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.comptroller_migration
    ADD CONSTRAINT comptroller_migration_pkey PRIMARY KEY (name);


--
-- Name: customer customer_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.customer
    ADD CONSTRAINT customer_pkey PRIMARY KEY (user_id);


--
-- Name: key key_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.key
    ADD CONSTRAINT key_pkey PRIMARY KEY (token);


--
-- Name: proxy_spend proxy_spend_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.proxy_spend
    ADD CONSTRAINT proxy_spend_pkey PRIMARY KEY (id);


--
-- Name: rate_limit_lease rate_limit_lease_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.rate_limit_lease
    ADD CONSTRAINT rate_limit_lease_pkey PRIMARY KEY (request_id, kind);


--
-- Name: rate_limit_window rate_limit_window_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.rate_limit_window
    ADD CONSTRAINT rate_limit_window_pkey PRIMARY KEY (kind, entity);


--
-- Name: spend_log spend_log_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.spend_log
    ADD CONSTRAINT spend_log_pkey PRIMARY KEY (request_id);


--
-- Name: team team_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.team
    ADD CONSTRAINT team_pkey PRIMARY KEY (team_id);


--
-- Name: unpriced_model unpriced_model_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.unpriced_model
    ADD CONSTRAINT unpriced_model_pkey PRIMARY KEY (model_group);


--
-- Name: user user_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public."user"
    ADD CONSTRAINT user_pkey PRIMARY KEY (user_id);


--
-- Name: webhook_alert_once webhook_alert_once_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.webhook_alert_once
    ADD CONSTRAINT webhook_alert_once_pkey PRIMARY KEY (key);


--
-- Name: webhook_outbox webhook_outbox_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.webhook_outbox
    ADD CONSTRAINT webhook_outbox_pkey PRIMARY KEY (id);


--
-- Name: budget_reservation_entity_kind_entity_id_expires_at; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX budget_reservation_entity_kind_entity_id_expires_at ON public.budget_reservation USING btree (entity_kind, entity_id, expires_at);


--
-- Name: budget_reservation_request_id; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX budget_reservation_request_id ON public.budget_reservation USING btree (request_id);


--
-- Name: customer_budget_id; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX customer_budget_id ON public.customer USING btree (budget_id);


--
-- Name: key_user_id; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX key_user_id ON public.key USING btree (user_id);


--
-- Name: rate_limit_lease_expires_at; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX rate_limit_lease_expires_at ON public.rate_limit_lease USING btree (expires_at);


--
-- Name: spend_log_api_key; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX spend_log_api_key ON public.spend_log USING btree (api_key);


--
-- Name: spend_log_end_user; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX spend_log_end_user ON public.spend_log USING btree (end_user);


--
-- Name: spend_log_start_time; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX spend_log_start_time ON public.spend_log USING btree (start_time);


--
-- Name: spend_log_user_id; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX spend_log_user_id ON public.spend_log USING btree (user_id);


--
-- Name: webhook_outbox_due; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX webhook_outbox_due ON public.webhook_outbox USING btree (next_attempt_at) WHERE (sent_at IS NULL);


--
-- Name: webhook_outbox_sent; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX webhook_outbox_sent ON public.webhook_outbox USING btree (sent_at) WHERE (sent_at IS NOT NULL);


--
-- PostgreSQL database dump complete
--


